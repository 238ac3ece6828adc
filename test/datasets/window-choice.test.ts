import { describe, expect, it } from 'vitest';
import { evokedWindow } from '../../src/datasets/window-choice.js';

/** Traces of `units` identical ROIs: a calcium-like response to each stimulus plus optional noise. */
function traces(o: { onsets: number[]; frames: number; units: number; stimulusFrames: number; decayFrames: number; noise?: number }): Float32Array {
  const out = new Float32Array(o.frames * o.units);
  let seed = 7;
  const rand = (): number => ((seed = (seed * 16807) % 2147483647) / 2147483647) - 0.5;
  for (let t = 0; t < o.frames; t++) {
    // Sum over stimuli of a boxcar convolved with an exponential decay.
    let v = 0;
    for (const k of o.onsets) {
      if (t < k) continue;
      const on = Math.min(t - k, o.stimulusFrames);
      v += (1 - Math.exp(-on / 2)) * Math.exp(-Math.max(0, t - k - o.stimulusFrames) / o.decayFrames);
    }
    for (let j = 0; j < o.units; j++) out[t * o.units + j] = v + (o.noise ?? 0) * rand();
  }
  return out;
}

describe('the response window from the mean evoked response', () => {
  const onsets = Array.from({ length: 40 }, (_, i) => 10 + i * 25);
  const frames = 10 + 40 * 25 + 30;
  const train = onsets.map(() => true);

  it('spans where the evoked response is at least half way from trough to peak', () => {
    const x = traces({ onsets, frames, units: 4, stimulusFrames: 15, decayFrames: 12 });
    const w = evokedWindow(x, frames, 4, onsets, train)!;
    // Rises with time constant 2 frames to the stimulus' end at frame 15, then decays with 12 frames.
    expect(w.lagFrames).toBeGreaterThanOrEqual(2);
    expect(w.lagFrames).toBeLessThanOrEqual(4);
    const end = w.lagFrames + w.lengthFrames;
    expect(end).toBeGreaterThan(16);
    expect(end).toBeLessThanOrEqual(15 + 12);
  });

  it('moves later and grows with a slower indicator', () => {
    const fast = evokedWindow(traces({ onsets, frames, units: 2, stimulusFrames: 15, decayFrames: 3 }), frames, 2, onsets, train)!;
    const slow = evokedWindow(traces({ onsets, frames, units: 2, stimulusFrames: 15, decayFrames: 15 }), frames, 2, onsets, train)!;
    expect(slow.lagFrames + slow.lengthFrames).toBeGreaterThan(fast.lagFrames + fast.lengthFrames);
  });

  it('gives no window when nothing is evoked (noise alone)', () => {
    const x = traces({ onsets: [], frames, units: 3, stimulusFrames: 15, decayFrames: 12, noise: 1 });
    expect(evokedWindow(x, frames, 3, onsets, train)).toBeUndefined();
  });

  it('uses training presentations only', () => {
    const x = traces({ onsets, frames, units: 2, stimulusFrames: 15, decayFrames: 12 });
    expect(evokedWindow(x, frames, 2, onsets, onsets.map(() => false))).toBeUndefined();
  });
});
