import type { ResponseWindow } from './recording.js';

/**
 * The response window chosen from the data: among candidate lags and lengths, the one whose trial
 * responses are most reliable across repeats of the same image - per ROI, the correlation over
 * images between the mean of the odd and of the even repeats, averaged over ROIs. Only presentations
 * of the training tier are used (images shown there at least twice), so nothing that scores a
 * decoder picks its window.
 */
export const MIN_REPEATED_IMAGES = 8;
/** Candidate lags: 0 .. this many seconds after the onset frame. */
export const MAX_LAG_SECONDS = 0.3;
/** Candidate lengths: these multiples of the median presentation. */
export const LENGTH_FACTORS = [0.5, 1, 1.5, 2] as const;

export interface ReliableWindow extends ResponseWindow {
  reliability: number;
  images: number;
  candidates: number;
}

export function reliableWindow(
  traces: Float32Array,
  frames: number,
  units: number,
  onsets: readonly number[],
  templates: readonly number[],
  train: readonly boolean[],
  durationFrames: number,
  rate: number,
): ReliableWindow | undefined {
  // Training presentations of images shown there at least twice: the odd repeats against the even.
  const byImage = new Map<number, number[]>();
  onsets.forEach((k, i) => {
    if (!train[i] || k < 0) return;
    const list = byImage.get(templates[i]) ?? [];
    list.push(i);
    byImage.set(templates[i], list);
  });
  const images = [...byImage.values()].filter((l) => l.length >= 2);
  if (images.length < MIN_REPEATED_IMAGES) return undefined;
  const maxLag = Math.max(1, Math.ceil(MAX_LAG_SECONDS * rate));
  const lengths = [...new Set(LENGTH_FACTORS.map((f) => Math.max(1, Math.round(f * durationFrames))))];
  const maxLength = Math.max(...lengths);
  const fits = (i: number): boolean => onsets[i] + maxLag + maxLength <= frames;
  const usable = images.map((l) => l.filter(fits)).filter((l) => l.length >= 2);
  if (usable.length < MIN_REPEATED_IMAGES) return undefined;
  const m = usable.length;
  let best: ReliableWindow | undefined;
  const sum = new Float64Array(units);
  for (const length of lengths) {
    // Per candidate lag: the odd- and even-repeat mean response of every image ([lag][half][image][unit]).
    const halves = Array.from({ length: maxLag + 1 }, () => [new Float64Array(m * units), new Float64Array(m * units)]);
    usable.forEach((list, img) => {
      list.forEach((i, r) => {
        const half = r % 2;
        const weight = 1 / (length * Math.ceil((list.length - half) / 2));
        const k = onsets[i];
        sum.fill(0);
        for (let f = k; f < k + length; f++) for (let j = 0; j < units; j++) sum[j] += traces[f * units + j];
        for (let lag = 0; lag <= maxLag; lag++) {
          if (lag > 0) {
            const out = (k + lag - 1) * units;
            const inn = (k + lag + length - 1) * units;
            for (let j = 0; j < units; j++) sum[j] += traces[inn + j] - traces[out + j];
          }
          const h = halves[lag][half];
          for (let j = 0; j < units; j++) h[img * units + j] += sum[j] * weight;
        }
      });
    });
    for (let lag = 0; lag <= maxLag; lag++) {
      const r = meanCorrelation(halves[lag][0], halves[lag][1], m, units);
      if (!best || r > best.reliability) best = { lengthFrames: length, lagFrames: lag, reliability: r, images: m, candidates: lengths.length * (maxLag + 1) };
    }
  }
  return best;
}

/** Mean over units of the correlation over images of a[., j] and b[., j] (units without variance count as 0). */
function meanCorrelation(a: Float64Array, b: Float64Array, images: number, units: number): number {
  let total = 0;
  for (let j = 0; j < units; j++) {
    let ma = 0;
    let mb = 0;
    for (let i = 0; i < images; i++) {
      ma += a[i * units + j];
      mb += b[i * units + j];
    }
    ma /= images;
    mb /= images;
    let ab = 0;
    let aa = 0;
    let bb = 0;
    for (let i = 0; i < images; i++) {
      const x = a[i * units + j] - ma;
      const y = b[i * units + j] - mb;
      ab += x * y;
      aa += x * x;
      bb += y * y;
    }
    total += aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : 0;
  }
  return total / units;
}

export interface EvokedWindow extends ResponseWindow {
  /** Peak of the mean evoked response above its trough, in the traces' units. */
  peak: number;
  presentations: number;
}

/**
 * The window from the population's mean evoked response, for recordings without repeated training
 * images: the mean over units and training presentations of the traces from each onset up to the
 * median interval between onsets; the window is where that curve stays at or above half way from its
 * trough (the frames before the new response rises, where the previous one has decayed most) to its
 * peak: its full width at half maximum. It follows the indicator: a slow decay moves the window
 * later and makes it longer than the stimulus. Undefined when the curve shows no evoked response
 * that stands clear of its own frame-to-frame noise (e.g. images shown back to back).
 */
export function evokedWindow(traces: Float32Array, frames: number, units: number, onsets: readonly number[], train: readonly boolean[]): EvokedWindow | undefined {
  const sorted = onsets.filter((k) => k >= 0).sort((a, b) => a - b);
  const gaps = sorted.slice(1).map((k, i) => k - sorted[i]).filter((g) => g > 0).sort((a, b) => a - b);
  if (!gaps.length) return undefined;
  const horizon = gaps[gaps.length >> 1];
  if (horizon < 3) return undefined;
  const curve = new Float64Array(horizon);
  let count = 0;
  onsets.forEach((k, i) => {
    if (!train[i] || k < 0 || k + horizon > frames) return;
    count++;
    for (let t = 0; t < horizon; t++) {
      const off = (k + t) * units;
      let s = 0;
      for (let j = 0; j < units; j++) s += traces[off + j];
      curve[t] += s / units;
    }
  });
  if (count < 2) return undefined;
  for (let t = 0; t < horizon; t++) curve[t] /= count;
  let at = 0;
  for (let t = 1; t < horizon; t++) if (curve[t] > curve[at]) at = t;
  let trough = curve[0];
  for (let t = 1; t <= at; t++) trough = Math.min(trough, curve[t]);
  const peak = curve[at] - trough;
  // Noise: the median absolute second difference (a smooth evoked curve has almost none).
  const second = Array.from({ length: horizon - 2 }, (_, t) => Math.abs(curve[t] - 2 * curve[t + 1] + curve[t + 2])).sort((a, b) => a - b);
  if (!(peak > 0) || peak < 10 * second[second.length >> 1]) return undefined;
  const half = trough + peak / 2;
  let first = at;
  while (first > 0 && curve[first - 1] >= half) first--;
  let last = at;
  while (last + 1 < horizon && curve[last + 1] >= half) last++;
  return { lengthFrames: last - first + 1, lagFrames: first, peak, presentations: count };
}
