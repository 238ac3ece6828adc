import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { trainDecoder } from '../../src/training/decoders/train-decoder.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { evaluateBundle } from '../../src/training/eval/evaluate.js';
import { readModel } from '../../src/models/onnx/index.js';
import { meiFixture } from '../helpers/meis.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

/**
 * The first steps of CNN and GAN training, pinned to recorded figures: the same seeds must give the
 * same losses whenever the training code is reorganised without meaning to change it. The GAN reads a
 * small MEI fixture written here instead of training an encoder first.
 */
const quiet = (): void => undefined;

// Recorded with this session's code before any restructuring (2 threads, tiny preset, seed 1).
const PINNED = {
  cnn: [5.162225723266602, 4.874284744262695, 4.798404057820638],
  gan: [0.5765912532806396, 0.5606477856636047, 0.5549249450365702],
};

describe('pinned first steps (behaviour guard for restructuring)', () => {
  let data: string;
  let work: string;
  beforeAll(async () => {
    data = await tinyDataset();
    work = mkdtempSync(join(tmpdir(), 'cc-pin-'));
    meiFixture(join(work, 'meis'), 24, 36, 64);
  }, 60_000);

  for (const kind of ['cnn', 'gan'] as const)
    it(`${kind}: train losses of the first 3 steps equal the recorded figures`, async () => {
      const r = await trainDecoder({ kind, data, out: join(work, kind), recipe: 'report', epochs: 1, maxSteps: 3, validateEvery: 1, meis: kind === 'gan' ? join(work, 'meis') : undefined, quiet: true, log: quiet });
      const losses = r.history.map((h) => h.trainLoss);
      expect(losses).toHaveLength(3);
      losses.forEach((l, i) => expect(Math.abs(l - PINNED[kind][i]) / Math.abs(PINNED[kind][i])).toBeLessThan(1e-4));
    });

  it('--budget stops after the step that spends it, keeps the best bundle and says why in stop.json', async () => {
    const out = join(work, 'budget');
    const r = await trainDecoder({ kind: 'cnn', data, out, epochs: 5, budgetSeconds: 0.001, quiet: true, log: quiet });
    expect(r.steps).toBe(1);
    expect(existsSync(join(out, 'manifest.json'))).toBe(true);
    const stop = JSON.parse(readFileSync(join(out, 'run', 'stop.json'), 'utf8')) as Record<string, unknown>;
    expect(stop).toMatchObject({ reason: 'budget', step: 1, budgetSeconds: 0.001, bestStep: 1 });
  });

  it('ridge-anchored, untrained (learning rate 0): the refiner CNN (with and without the contrast read-out, full-size and coarse), the report CNN and the GAN decode exactly like the ridge fit on the same data', async () => {
    await trainRidge({ data, out: join(work, 'ridge'), quiet: true, log: quiet });
    const ridge = await evaluateBundle(join(work, 'ridge'), data, { fid: 0 });
    const cases = [['cnn', 'cortexcast', 5, false, 1], ['cnn', 'cortexcast', 5, true, 1], ['cnn', 'cortexcast', 5, true, 4], ['cnn', 'report', 0, false, 1], ['gan', 'cortexcast', 0, false, 1]] as const;
    for (const [kind, recipe, anchorFolds, anchorContrast, contrastDownsample] of cases) {
      const out = join(work, `${kind}-${recipe}-anchored${anchorContrast ? `-contrast${contrastDownsample}` : ''}`);
      const r = await trainDecoder({ kind, data, out, recipe, anchor: 'ridge', anchorFolds, anchorContrast, contrastDownsample: anchorContrast ? contrastDownsample : undefined, lr: 0, epochs: 1, maxSteps: 2, meis: kind === 'gan' ? join(work, 'meis') : undefined, quiet: true, log: quiet });
      expect((r.manifest.training.config as { anchor: string }).anchor).toBe('ridge');
      if (anchorContrast) {
        // The bundle computes both read-outs from the responses: one [neurons, 2 x H x W] constant at
        // full size; a coarse contrast read-out is its own [neurons, H/f x W/f] constant, then a bilinear upsampling.
        const { graph } = readModel(readFileSync(join(out, 'model.onnx')));
        const dims = (prefix: string): readonly number[] | undefined => [...graph.initializers.entries()].find(([name]) => name.startsWith(prefix))?.[1].tensor.dims;
        const n = r.manifest.input.neurons;
        if (contrastDownsample === 1) expect(dims('anchor/weight')).toEqual([n, 2 * 36 * 64]);
        else {
          expect(dims('anchor/weight_0')).toEqual([n, 36 * 64]);
          expect(dims('anchor/weight_1')).toEqual([n, (36 / 4) * (64 / 4)]);
          expect(dims('anchor/upsample_1/resize/columns')).toEqual([64 / 4, 64]);
        }
        const cfg = r.manifest.training.config as Record<string, unknown>;
        expect(cfg.anchorContrast).toBe(true);
        // The grid is recorded where it is coarse (a full-size run's config reads as before the option).
        expect(cfg.contrastDownsample).toBe(contrastDownsample === 1 ? undefined : contrastDownsample);
      }
      const ev = await evaluateBundle(out, data, { fid: 0 });
      let diff = 0;
      for (let i = 0; i < ev.recon.length; i++) diff = Math.max(diff, Math.abs(ev.recon[i] - ridge.recon[i]));
      expect(diff, kind).toBeLessThan(1e-4);
    }
    // The realtime GAN profile trains and exports through the same path: coarse MEIs in the bundle, ridge's images at step 0.
    const rt = join(work, 'gan-realtime-anchored');
    const r = await trainDecoder({ kind: 'gan', profile: 'realtime', data, out: rt, anchor: 'ridge', lr: 0, epochs: 1, maxSteps: 2, meis: join(work, 'meis'), quiet: true, log: quiet });
    expect(r.manifest.name).toContain('gan-realtime');
    const { graph } = readModel(readFileSync(join(rt, 'model.onnx')));
    expect(graph.initializers.get('readin/meis')?.tensor.dims).toEqual([24, 9, 16]);
    const ev = await evaluateBundle(rt, data, { fid: 0 });
    let diff = 0;
    for (let i = 0; i < ev.recon.length; i++) diff = Math.max(diff, Math.abs(ev.recon[i] - ridge.recon[i]));
    expect(diff, 'gan realtime').toBeLessThan(1e-4);
    // Gradients reach the coarse readin through the graph's upsampling: two steps move its context MLP's last layer.
    const moved = join(work, 'gan-realtime-steps');
    await trainDecoder({ kind: 'gan', profile: 'realtime', data, out: moved, anchor: 'ridge', epochs: 1, maxSteps: 2, validateEvery: 1, meis: join(work, 'meis'), quiet: true, log: quiet });
    const contextOut = (dir: string): Float32Array => {
      const inits = readModel(readFileSync(join(dir, 'model.onnx'))).graph.initializers;
      const found = [...inits.entries()].find(([name]) => name.startsWith('readin/context_out/') && name.endsWith('weight'));
      return found![1].tensor.data as Float32Array;
    };
    const [before, after] = [contextOut(rt), contextOut(moved)];
    expect(after.length).toBe(before.length);
    expect(after.some((v, i) => Math.abs(v - before[i]) > 1e-7)).toBe(true);
  }, 240_000);
});
