import { describe, expect, it } from 'vitest';
import type { ContinuousRecording, Presentation } from '../../src/datasets/recording.js';
import { cutTrials, onsetFrame, tiersByImage } from '../../src/datasets/trials.js';

/** A seeded normal generator (Box-Muller on mulberry32) for synthetic traces. */
function normals(seed: number): () => number {
  let a = seed >>> 0;
  const u = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

/**
 * 10 Hz traces of 20 ROIs: `images` images shown `repeats` times each, one onset every 10 frames,
 * 0.5 s on. Each image's pattern is in frames k+2 .. k+4 after its onset frame k only; noise elsewhere.
 */
function recording(images: number, repeats: number, tier: (image: number) => string | undefined): ContinuousRecording {
  const rate = 10;
  const units = 20;
  const rnd = normals(3);
  const pattern = Array.from({ length: images }, () => Array.from({ length: units }, rnd));
  const order = Array.from({ length: images * repeats }, (_, i) => i % images);
  const frames = order.length * 10 + 10;
  const traces = Float32Array.from({ length: frames * units }, () => 0.5 * rnd());
  const presentations: Presentation[] = order.map((img, i) => {
    const k = i * 10;
    for (let f = k + 2; f <= k + 4; f++) for (let j = 0; j < units; j++) traces[f * units + j] += pattern[img][j];
    const t = tier(img);
    return { start: k / rate, stop: k / rate + 0.5, template: img, ...(t ? { tier: t } : {}) };
  });
  return { traces, frames, units, unitIds: Array.from({ length: units }, (_, j) => j), frameTimes: Float64Array.from({ length: frames }, (_, f) => f / rate), rate, presentations, templates: [] };
}

describe('trials from continuous traces', () => {
  it('an onset falls in the last frame starting at or before it (float32 times within a hundredth of a frame count as on time)', () => {
    const times = Float64Array.from({ length: 10 }, (_, f) => f / 30);
    expect(onsetFrame(times, 0, 30)).toBe(0);
    expect(onsetFrame(times, 0.05, 30)).toBe(1);
    expect(onsetFrame(times, Math.fround(4 / 30) - 1e-6, 30)).toBe(4);
    expect(onsetFrame(times, -1, 30)).toBe(-1);
  });

  it('with repeats in the training tier, the window is the most reliable one: exactly the frames that carry the image', () => {
    const cut = cutTrials(recording(30, 4, () => 'train'));
    expect(cut.window).toMatchObject({ lengthFrames: 3, lagFrames: 2 });
    expect(cut.windowRule).toMatch(/most reliable of 16 candidates across repeats of 30 training images/);
  });

  it('only training repeats choose it: repeats in the test tier alone leave the duration rule', () => {
    const cut = cutTrials(recording(30, 4, (img) => (img < 25 ? 'test' : 'train')));
    expect(cut.window).toMatchObject({ lengthFrames: 5, lagFrames: 1 });
    expect(cut.windowRule).toMatch(/median presentation 0.500 s/);
  });

  it('a window given on the command line is used as given', () => {
    const cut = cutTrials(recording(30, 4, () => 'train'), { lengthFrames: 4, lagFrames: 0 });
    expect(cut.window).toMatchObject({ lengthFrames: 4, lagFrames: 0 });
    expect(cut.windowRule).toMatch(/as given/);
  });

  it('tiers by image: repeated images are the test tier when they are a minority, else a seeded fifth of the images', () => {
    const few = tiersByImage([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1], 1, 0.1);
    expect(few.tiers.filter((t, i) => t === 'test').length).toBe(4);
    expect(few.tiers[0]).toBe('test');
    expect(few.tiers[10]).toBe('test');
    const templates = Array.from({ length: 200 }, (_, i) => i % 50);
    const most = tiersByImage(templates, 1, 0.1);
    const imagesOf = (tier: string): number => new Set(templates.filter((_, i) => most.tiers[i] === tier)).size;
    expect([imagesOf('test'), imagesOf('validation'), imagesOf('train')]).toEqual([10, 4, 36]);
    // Every trial of one image shares its tier.
    for (let i = 0; i < 200; i++) expect(most.tiers[i]).toBe(most.tiers[i % 50]);
    expect(tiersByImage(templates, 1, 0.1).tiers).toEqual(most.tiers);
    expect(tiersByImage(templates, 2, 0.1).tiers).not.toEqual(most.tiers);
  });
});
