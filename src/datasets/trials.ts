import { ccError } from '../common/errors.js';
import type { ContinuousRecording, ResponseWindow } from './recording.js';
import { evokedWindow, reliableWindow } from './window-choice.js';

/**
 * Continuous traces into trials: one response per presentation, the mean of the window of imaging
 * frames after its onset (optionally minus the mean of the frames just before it), and a tier for
 * each trial.
 */

/** A response window with the imaging rate it was counted at: what a bundle trained on it records. */
export interface RecordedResponseWindow extends ResponseWindow {
  rateHz: number;
}

export interface TrialOptions {
  /** Frames averaged per response (default: the median presentation, in frames). */
  lengthFrames?: number;
  /** Frames between the onset frame and the first averaged one (default: see defaultResponseWindow). */
  lagFrames?: number;
  /** Frames before the onset whose mean is subtracted (0 = none, the default). */
  baselineFrames?: number;
  /** Seed of the validation split when the file names no tiers. */
  seed?: number;
  /** Share of the non-test images that validate when the file names no tiers. */
  validationFraction?: number;
}

export interface CutTrials {
  /** Trials x units, row-major. */
  responses: Float32Array;
  count: number;
  units: number;
  /** Per trial: template index, tier. */
  templates: number[];
  tiers: string[];
  /** Presentation start times of the kept trials (seconds). */
  onsets: number[];
  window: RecordedResponseWindow;
  baselineFrames: number;
  /** Presentations whose window (or baseline) falls outside the recording. */
  dropped: number;
  /** How the window was chosen and how tiers were assigned, for logs and docs. */
  windowRule: string;
  tierRule: string;
}

/** Seconds from onset to the first frame that shows the indicator's rise. */
export const RISE_SECONDS = 0.05;
export const DEFAULT_VALIDATION_FRACTION = 0.1;
/** Where (nearly) every image repeats, the share of images whose repeats are the test tier. */
export const REPEATED_TEST_FRACTION = 0.2;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[s.length >> 1] : 0;
};

/**
 * The default window: as long as the median presentation (the stimulus' own duration, so a response
 * integrates what one image evoked, like SENSORIUM's per-trial responses), starting RISE_SECONDS after
 * the onset frame (at least one frame: the onset frame itself is partly pre-stimulus).
 */
export function defaultResponseWindow(rec: Pick<ContinuousRecording, 'rate' | 'presentations'>): ResponseWindow & { rule: string; lengthRule: string; lagRule: string } {
  const duration = median(rec.presentations.map((p) => p.stop - p.start));
  const lengthFrames = Math.max(1, Math.round(duration * rec.rate));
  const lagFrames = Math.max(1, Math.round(RISE_SECONDS * rec.rate));
  return {
    lengthFrames,
    lagFrames,
    rule: `length = median presentation ${duration.toFixed(3)} s x ${rec.rate.toFixed(2)} Hz = ${lengthFrames} frames; lag = max(1, round(${RISE_SECONDS} s x rate)) = ${lagFrames} frames`,
    lengthRule: `median presentation ${duration.toFixed(3)} s x ${rec.rate.toFixed(2)} Hz`,
    lagRule: `max(1, round(${RISE_SECONDS} s x rate))`,
  };
}

/** The imaging frame an onset falls in: the last frame starting at or before it (a hundredth of a frame of slack for float32 times). */
export function onsetFrame(frameTimes: Float64Array, t: number, rate: number): number {
  const x = t + 0.01 / rate;
  let lo = 0;
  let hi = frameTimes.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (frameTimes[mid] <= x) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

/** A small seeded generator (mulberry32): the validation split must not change between runs. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffled<T>(xs: T[], rnd: () => number): T[] {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

/**
 * Tiers by image when the file names none. Images shown more than once are the test tier (their
 * responses are averaged over repeats, as SENSORIUM's test tier is) when they are a minority of the
 * images; where (nearly) every image repeats, a seeded REPEATED_TEST_FRACTION of the images is. A
 * seeded share of the remaining images validates; the rest train. All trials of an image share its tier.
 */
export function tiersByImage(templates: number[], seed: number, validationFraction: number): { tiers: string[]; rule: string } {
  const shown = new Map<number, number>();
  for (const t of templates) shown.set(t, (shown.get(t) ?? 0) + 1);
  const images = [...shown.keys()].sort((a, b) => a - b);
  const repeated = images.filter((t) => shown.get(t)! > 1);
  const rnd = seeded(seed);
  const tierOf = new Map<number, string>();
  let rule: string;
  if (repeated.length * 2 <= images.length) {
    for (const t of repeated) tierOf.set(t, 'test');
    rule = `test = the ${repeated.length} repeated images; validation = a seeded ${validationFraction} of the other images`;
  } else {
    const order = shuffled(images, rnd);
    for (const t of order.slice(0, Math.max(1, Math.round(images.length * REPEATED_TEST_FRACTION)))) tierOf.set(t, 'test');
    rule = `most images repeat: test = a seeded ${REPEATED_TEST_FRACTION} of the images; validation = a seeded ${validationFraction} of the others`;
  }
  const rest = shuffled(images.filter((t) => !tierOf.has(t)), rnd);
  const nVal = rest.length > 1 ? Math.max(1, Math.round(rest.length * validationFraction)) : 0;
  rest.forEach((t, i) => tierOf.set(t, i < nVal ? 'validation' : 'train'));
  return { tiers: templates.map((t) => tierOf.get(t)!), rule };
}

function checkFrames(name: string, v: number | undefined, min: number): void {
  if (v !== undefined && (!Number.isInteger(v) || v < min)) throw ccError('CC_ERR_OPTION', `${name} must be a whole number, at least ${min} (got ${v})`);
}

export function cutTrials(rec: ContinuousRecording, o: TrialOptions = {}): CutTrials {
  checkFrames('--window-frames', o.lengthFrames, 1);
  checkFrames('--lag-frames', o.lagFrames, 0);
  checkFrames('--baseline-frames', o.baselineFrames, 0);
  const n = rec.units;
  const ks = rec.presentations.map((p) => onsetFrame(rec.frameTimes, p.start, rec.rate));
  // Tiers first (they depend on images, not on the window), so the window can be chosen on training trials only.
  const all = rec.presentations.map((p) => p.template);
  const named = rec.presentations.length > 0 && rec.presentations.every((p) => p.tier !== undefined && p.tier !== '');
  const byImage = named ? undefined : tiersByImage(all, o.seed ?? 1, o.validationFraction ?? DEFAULT_VALIDATION_FRACTION);
  const tierOf = named ? rec.presentations.map((p) => p.tier!) : byImage!.tiers;

  const def = defaultResponseWindow(rec);
  const chosen =
    o.lengthFrames === undefined && o.lagFrames === undefined
      ? reliableWindow(rec.traces, rec.frames, n, ks, all, tierOf.map((t) => t === 'train'), def.lengthFrames, rec.rate)
      : undefined;
  // Without repeated training images: the evoked response's full width at half maximum.
  const evoked =
    !chosen && o.lengthFrames === undefined && o.lagFrames === undefined ? evokedWindow(rec.traces, rec.frames, n, ks, tierOf.map((t) => t === 'train')) : undefined;
  const lengthFrames = o.lengthFrames ?? chosen?.lengthFrames ?? evoked?.lengthFrames ?? def.lengthFrames;
  const lagFrames = o.lagFrames ?? chosen?.lagFrames ?? evoked?.lagFrames ?? def.lagFrames;
  const baselineFrames = o.baselineFrames ?? 0;
  const windowRule = chosen
    ? `length ${lengthFrames} frames, lag ${lagFrames} frames: the most reliable of ${chosen.candidates} candidates across repeats of ${chosen.images} training images (split-half correlation ${chosen.reliability.toFixed(3)})`
    : evoked
      ? `length ${lengthFrames} frames, lag ${lagFrames} frames: where the mean evoked response of ${evoked.presentations} training presentations is at least half way from its trough to its peak`
      : `length ${lengthFrames} frames (${o.lengthFrames === undefined ? def.lengthRule : 'as given'}), lag ${lagFrames} frames (${o.lagFrames === undefined ? def.lagRule : 'as given'})`;

  const kept: number[] = [];
  ks.forEach((k, i) => {
    if (k >= baselineFrames && k >= 0 && k + lagFrames + lengthFrames <= rec.frames) kept.push(i);
  });
  const responses = new Float32Array(kept.length * n);
  const acc = new Float64Array(n);
  kept.forEach((i, row) => {
    const k = ks[i];
    acc.fill(0);
    for (let f = k + lagFrames; f < k + lagFrames + lengthFrames; f++) {
      const off = f * n;
      for (let j = 0; j < n; j++) acc[j] += rec.traces[off + j];
    }
    for (let j = 0; j < n; j++) acc[j] /= lengthFrames;
    if (baselineFrames) {
      for (let f = k - baselineFrames; f < k; f++) {
        const off = f * n;
        for (let j = 0; j < n; j++) acc[j] -= rec.traces[off + j] / baselineFrames;
      }
    }
    responses.set(acc, row * n);
  });
  return {
    responses,
    count: kept.length,
    units: n,
    templates: kept.map((i) => all[i]),
    tiers: kept.map((i) => tierOf[i]),
    onsets: kept.map((i) => rec.presentations[i].start),
    window: { lengthFrames, lagFrames, rateHz: rec.rate },
    baselineFrames,
    dropped: rec.presentations.length - kept.length,
    windowRule,
    tierRule: named ? "the file's tier column" : byImage!.rule,
  };
}
