import { ccError } from '../common/errors.js';
import { TRIAL_LEVEL_WINDOW, type ResponseWindow } from '../datasets/recording.js';
import type { Stimulus } from './frames.js';

/**
 * The per-stream response window: a continuous stream (one response per imaging frame) is turned back
 * into the trial-like responses a decoder was trained on, the mean of the newest `lengthFrames`
 * frames, and each such mean is paired with the stimulus that was on screen `lagFrames +
 * lengthFrames - 1` frames earlier (the frame whose stimulus onset that window answers).
 *
 * The ring holds raw frames, not std-scaled ones: scaling is linear, so the scaled mean equals the
 * mean of scaled frames, and scaling only the means that are decoded (the scheduler does it at
 * dispatch, with the bundle that runs them) costs nothing for the frames that latest-wins skips.
 * The optional log10 transform is not linear; it is applied to the mean, as in training.
 */

/** Largest window and lag the server takes (memory per stream: lengthFrames x neurons x 4 bytes). */
export const MAX_WINDOW_FRAMES = 128;
export const MAX_LAG_FRAMES = 128;

/** What was on screen during one imaging frame, as the rig reported it. */
export interface Screen {
  imageId?: number;
  stimulus?: Stimulus;
}

/** Where a model's window came from: the server config, the bundle's manifest, or neither (trial-level). */
export type WindowSource = 'config' | 'manifest' | 'default';

export interface ResolvedWindow extends ResponseWindow {
  source: WindowSource;
  /** The imaging rate the decoder was trained at (manifest), when known: frames -> milliseconds. */
  rateHz?: number;
}

/**
 * A model's window: the config's override, else what the decoder was trained on (its manifest),
 * else a window of one (every frame is a trial-level response, decoded as it is).
 */
export function resolveWindow(configured: ResponseWindow | undefined, trained: (ResponseWindow & { rateHz?: number }) | undefined, bundle: string): ResolvedWindow {
  const rateHz = trained?.rateHz;
  const w: ResolvedWindow = configured
    ? { lengthFrames: configured.lengthFrames, lagFrames: configured.lagFrames, source: 'config' }
    : trained
      ? { lengthFrames: trained.lengthFrames, lagFrames: trained.lagFrames, source: 'manifest' }
      : { ...TRIAL_LEVEL_WINDOW, source: 'default' };
  if (rateHz !== undefined) w.rateHz = rateHz;
  const ok = (v: number, lo: number, hi: number): boolean => Number.isInteger(v) && v >= lo && v <= hi;
  if (!ok(w.lengthFrames, 1, MAX_WINDOW_FRAMES) || !ok(w.lagFrames, 0, MAX_LAG_FRAMES))
    throw ccError(
      'CC_ERR_BUNDLE',
      bundle,
      `response window ${w.lengthFrames} frames at lag ${w.lagFrames} (from the ${w.source}) is outside 1..${MAX_WINDOW_FRAMES} frames and lag 0..${MAX_LAG_FRAMES}; set models[].responseWindow to serve it`,
    );
  return w;
}

/** One imaging frame through the window: either a response to decode, or the window is still filling. */
export type WindowStep =
  | { kind: 'ready'; responses: Float32Array; screen: Screen | undefined }
  | { kind: 'filling'; have: number; need: number };

/**
 * One stream's window. `push` costs O(units): the running sum gains the new frame and loses the one
 * that leaves the window. The sum is float64 over float32 frames, so its rounding drift after even
 * 10^7 frames stays far below float32 resolution and it is never recomputed.
 */
export class StreamWindow {
  readonly lengthFrames: number;
  readonly lagFrames: number;
  private readonly ring: Float32Array;
  private readonly sum: Float64Array;
  /** What was on screen for the last lagFrames + lengthFrames frames (slot = frame index mod size). */
  private readonly screens: (Screen | undefined)[];
  private pushed = 0;
  private current: Screen | undefined;

  constructor(
    readonly model: string,
    readonly units: number,
    w: ResponseWindow,
  ) {
    this.lengthFrames = w.lengthFrames;
    this.lagFrames = w.lagFrames;
    const trialLevel = w.lengthFrames === 1 && w.lagFrames === 0;
    this.ring = new Float32Array(trialLevel ? 0 : w.lengthFrames * units);
    this.sum = new Float64Array(trialLevel ? 0 : units);
    this.screens = new Array<Screen | undefined>(w.lengthFrames + w.lagFrames);
  }

  /** Still the window for this model, size and configuration (else the stream starts a new one). */
  fits(model: string, units: number, w: ResponseWindow): boolean {
    return model === this.model && units === this.units && w.lengthFrames === this.lengthFrames && w.lagFrames === this.lagFrames;
  }

  /**
   * The screen during this frame. Stimulus bytes set it; a frame that repeats the current image id
   * without bytes keeps it (so a rig sends each image once per presentation); any other frame says
   * what it says (an id alone, or nothing: a blank screen).
   */
  screenOf(imageId: number | undefined, stimulus: Stimulus | undefined): Screen | undefined {
    if (stimulus) return { imageId, stimulus };
    if (imageId !== undefined && this.current?.imageId === imageId) return this.current;
    return imageId !== undefined ? { imageId } : undefined;
  }

  /** Take one imaging frame (raw responses, `units` long) and what was on screen during it. */
  push(raw: Float32Array, imageId: number | undefined, stimulus: Stimulus | undefined): WindowStep {
    const screen = (this.current = this.screenOf(imageId, stimulus));
    const t = this.pushed++;
    const slots = this.screens.length;
    this.screens[t % slots] = screen;
    // The frame lagFrames + lengthFrames - 1 before t sits in the slot that t + 1 will overwrite.
    const attributed = t + 1 >= slots ? this.screens[(t + 1) % slots] : undefined;
    if (this.ring.length === 0) return { kind: 'ready', responses: raw, screen: attributed };
    const n = this.units;
    const at = (t % this.lengthFrames) * n;
    const sum = this.sum;
    if (t >= this.lengthFrames) for (let i = 0; i < n; i++) sum[i] += raw[i] - this.ring[at + i];
    else for (let i = 0; i < n; i++) sum[i] += raw[i];
    this.ring.set(raw, at);
    if (this.pushed < this.lengthFrames) return { kind: 'filling', have: this.pushed, need: this.lengthFrames };
    const mean = new Float32Array(n);
    const inv = 1 / this.lengthFrames;
    for (let i = 0; i < n; i++) mean[i] = sum[i] * inv;
    return { kind: 'ready', responses: mean, screen: attributed };
  }
}
