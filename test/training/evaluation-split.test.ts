import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { readNpy } from '../../src/common/npy.js';
import { PHOTOS } from '../../src/training/data/photos.js';
import { REGION_GUARD_PX, regionPlan } from '../../src/training/data/synth.js';
import { twoWayIdentification } from '../../src/training/eval/metrics/identification.js';
import { scoresBySource, stimulusSources } from '../../src/training/eval/stimulus-sources.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

interface PlannedTrial {
  tier: string;
  imageId: number;
  photo: string;
  crop: { left: number; top: number; width: number; height: number };
}
const trialsOf = (dir: string): PlannedTrial[] => (JSON.parse(readFileSync(join(dir, 'meta/simulation/params.json'), 'utf8')) as { trials: PlannedTrial[] }).trials;

/** Smallest gap in pixels between two rectangles (negative when they overlap). */
function gap(a: PlannedTrial['crop'], b: PlannedTrial['crop']): number {
  const dx = Math.max(b.left - (a.left + a.width), a.left - (b.left + b.width));
  const dy = Math.max(b.top - (a.top + a.height), a.top - (b.top + b.height));
  return Math.max(dx, dy);
}

describe("the 'regions' split: every photo in every tier, tiers kept apart by a guard band", () => {
  let base: string;
  let moreTrials: string;
  let noiseFree: string;
  beforeAll(async () => {
    base = await tinyDataset({ split: 'regions', testImages: 18 });
    moreTrials = await tinyDataset({ split: 'regions', testImages: 18, trainTrials: 720 });
    noiseFree = await tinyDataset({ split: 'regions', testImages: 18, noiseFree: true });
  });

  it('takes test and validation images from every photo', () => {
    const trials = trialsOf(base);
    for (const tier of ['test', 'validation', 'train']) expect(new Set(trials.filter((t) => t.tier === tier).map((t) => t.photo)), tier).toEqual(new Set(PHOTOS));
  });

  it('never lets a train crop come within the guard band of a validation or test crop of the same photo', () => {
    const trials = trialsOf(base);
    const held = trials.filter((t) => t.tier !== 'train');
    let pairs = 0;
    for (const t of trials.filter((x) => x.tier === 'train'))
      for (const h of held.filter((x) => x.photo === t.photo)) {
        expect(gap(t.crop, h.crop), `${t.photo} train ${JSON.stringify(t.crop)} vs ${h.tier} ${JSON.stringify(h.crop)}`).toBeGreaterThanOrEqual(REGION_GUARD_PX);
        pairs++;
      }
    expect(pairs).toBeGreaterThan(1000);
  });

  it('keeps the quadrants of a photo disjoint, with the guard band between them', () => {
    const plan = regionPlan({ width: 1024, height: 819 }, 5);
    const all = [...plan.train, ...plan.validation, ...plan.test];
    expect(all).toHaveLength(4);
    for (let i = 0; i < 4; i++) for (let j = i + 1; j < 4; j++) expect(gap(all[i], all[j])).toBeGreaterThanOrEqual(REGION_GUARD_PX);
  });

  it('keeps the same validation and test images when the train tier grows', () => {
    const held = (dir: string): string[] =>
      trialsOf(dir)
        .filter((t) => t.tier !== 'train')
        .map((t) => `${t.tier}:${t.imageId}:${t.photo}:${JSON.stringify(t.crop)}`)
        .sort();
    expect(trialsOf(moreTrials).filter((t) => t.tier === 'train').length).toBe(720);
    expect(held(moreTrials)).toEqual(held(base));
  });

  it('gives every repeat of a test image the same responses when noise-free, different ones otherwise', () => {
    const firstTwoRepeats = (dir: string): Float32Array[] => {
      const ids = Array.from(readNpy(join(dir, 'meta/trials/frame_image_id.npy')).data as BigInt64Array, Number);
      const tiers = readNpy(join(dir, 'meta/trials/tiers.npy')).data as string[];
      const first = ids.findIndex((_, i) => tiers[i] === 'test');
      const rows = ids.map((id, i) => (id === ids[first] ? i : -1)).filter((i) => i >= 0);
      return rows.slice(0, 2).map((i) => readNpy(join(dir, 'data/responses', `${i}.npy`)).data as Float32Array);
    };
    const [a, b] = firstTwoRepeats(noiseFree);
    expect(Array.from(a)).toEqual(Array.from(b));
    const [c, d] = firstTwoRepeats(base);
    expect(Array.from(c)).not.toEqual(Array.from(d));
  });

  it('records the source photo of every trial and scores per source', () => {
    const sources = stimulusSources(base)!;
    const trials = trialsOf(base);
    for (const t of trials) expect(sources.get(t.imageId)).toBe(t.photo);
    const P = 12 * 12;
    const ids = [...new Set(trials.filter((t) => t.tier === 'test').map((t) => t.imageId))];
    const targets = Float32Array.from({ length: ids.length * P }, (_, i) => (i * 7) % 5);
    const by = scoresBySource(sources, ids, targets, targets, 12, 12);
    expect(by.map((s) => s.source)).toEqual([...PHOTOS].sort());
    expect(by.reduce((a, s) => a + s.images, 0)).toBe(ids.length);
    for (const s of by) expect(s.mse).toBeCloseTo(0, 9);
  });
});

describe('two-way identification', () => {
  const dim = 16;
  const count = 12;
  const features = Float64Array.from({ length: count * dim }, (_, i) => Math.sin(i * 1.7) + Math.cos(i * 0.31 * (1 + (i % 5))));
  it('is 1 when every reconstruction has its own stimulus features', () => {
    expect(twoWayIdentification(features, features, count, dim)).toBe(1);
  });
  it("is 0 when every reconstruction has exactly another stimulus's features", () => {
    const oneHot = (i: number, out: Float64Array, row: number): void => void (out[row * dim + (i % count)] = 1);
    const own = new Float64Array(count * dim);
    const other = new Float64Array(count * dim);
    for (let i = 0; i < count; i++) {
      oneHot(i, own, i);
      oneHot(i + 1, other, i);
    }
    expect(twoWayIdentification(own, own, count, dim)).toBe(1);
    expect(twoWayIdentification(other, own, count, dim)).toBe(0);
  });
  it('is near chance for unrelated features and invariant to offset and scale', () => {
    let s = 1;
    const rand = (): number => ((s = (s * 16807) % 2147483647) / 2147483647) - 0.5;
    const n = 200;
    const a = Float64Array.from({ length: n * dim }, rand);
    const b = Float64Array.from({ length: n * dim }, rand);
    expect(Math.abs(twoWayIdentification(a, b, n, dim) - 0.5)).toBeLessThan(0.05);
    expect(twoWayIdentification(a.map((v) => 3 * v + 2), a, n, dim)).toBe(1);
  });
});
