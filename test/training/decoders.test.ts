import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadBundle } from '../../src/models/bundle.js';
import { readModel, tensor, writeModel } from '../../src/models/onnx/index.js';
import { createSession, runOnce } from '../../src/models/ort.js';
import { compareBundles } from '../../src/training/eval/compare.js';
import { trainDecoder, type TrainDecoderResult } from '../../src/training/decoders/train-decoder.js';
import { meiFixture } from '../helpers/meis.js';
import { onnxCheck } from '../helpers/onnx-check.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

const quiet = (): void => undefined;

/** The exported graph of the session's current parameters equals its eval pass. */
async function exportMatchesEval(r: TrainDecoderResult, neurons: number): Promise<number> {
  const x = Float32Array.from({ length: 3 * neurons }, (_, i) => ((i * 7919) % 13) / 4);
  const viaEval = (await r.generator.evaluate({ responses: tensor('float32', [3, neurons], x) })).data as Float32Array;
  const { session } = await createSession(writeModel(r.generator.exportGraph()));
  const viaExport = (await runOnce(session, { responses: tensor('float32', [3, neurons], x) })).image.data as Float32Array;
  let d = 0;
  for (let i = 0; i < viaEval.length; i++) d = Math.max(d, Math.abs(viaEval[i] - viaExport[i]));
  return d;
}

describe('CNN and GAN decoders train, export and serve (tiny simulated session)', () => {
  let data: string;
  let work: string;
  beforeAll(async () => {
    data = await tinyDataset();
    work = mkdtempSync(join(tmpdir(), 'cc-dec-'));
  }, 60_000);

  it("the report's CNN (small profile): loss falls over 3 epochs; run folder; export equals eval pass (served: test/server/served-equals-offline.test.ts)", async () => {
    const out = join(work, 'cnn');
    const r = await trainDecoder({ kind: 'cnn', data, out, recipe: 'report', epochs: 3, quiet: true, log: quiet });
    expect(r.history).toHaveLength(3);
    expect(r.history[2].trainLoss).toBeLessThan(r.history[0].trainLoss);
    for (const f of ['config.json', 'metrics.csv', 'metrics.json', 'curves.svg', 'validation-grid.png', 'checkpoint/generator/checkpoint.json']) expect(existsSync(join(r.run, f)), f).toBe(true);
    expect(readFileSync(join(r.run, 'metrics.csv'), 'utf8').split('\n')[0]).toBe('epoch,step,seconds,trainLoss,ssim,ssiml,mse,pixcorr,fid');
    const m = loadBundle(out).manifest;
    expect(m.kind).toBe('cnn');
    expect(m.metrics.validation!.fid).toBeCloseTo(r.best.fid, 6);
    expect(m.metrics.test!.ssiml).toBeGreaterThan(0);
    expect(await exportMatchesEval(r, 300)).toBeLessThan(1e-5);
    const checked = onnxCheck(join(out, 'model.onnx'));
    if (checked !== undefined) expect(checked).toBe('ok 17');
  }, 240_000);

  it('CNN resume continues from the checkpoint', async () => {
    const out = join(work, 'cnn-resume');
    await trainDecoder({ kind: 'cnn', data, out, recipe: 'report', epochs: 1, quiet: true, log: quiet });
    const r = await trainDecoder({ kind: 'cnn', data, out, recipe: 'report', epochs: 2, resume: true, quiet: true, log: quiet });
    expect(r.history.map((h) => h.epoch)).toEqual([1, 2]);
    expect(r.steps).toBe(2 * Math.floor(240 / 16));
    // Another objective cannot continue these weights: refused before any data is opened (a missing
    // folder here would otherwise be CC_ERR_DATASET_MISSING), naming the setting.
    await expect(trainDecoder({ kind: 'cnn', data: join(work, 'not-opened'), out, recipe: 'report', loss: 'mae', epochs: 3, resume: true, quiet: true, log: quiet })).rejects.toThrow(/CC_ERR_CHECKPOINT.*other settings than the run's \(loss: "mse" -> "mae"\)/);
  }, 240_000);

  it("cortexcast's CNN (the default): ridge image + a convolutional correction; trained on out-of-fold ridge images, the export computing its own", async () => {
    const out = join(work, 'cnn-refiner');
    const r = await trainDecoder({ kind: 'cnn', data, out, epochs: 3, lr: 1e-3, validateEvery: 15, quiet: true, log: quiet });
    const cfg = loadBundle(out).manifest.training.config as Record<string, unknown>;
    expect(cfg).toMatchObject({ recipe: 'cortexcast', anchor: 'ridge', anchorFolds: 5, lr: 1e-3 });
    // Training feeds the anchor; the bundle takes responses alone and computes the ridge image itself.
    expect(r.generator.stepInputNames.anchor_0).toBe('anchor_image');
    expect(readModel(loadBundle(out).model).graph.inputs.map((v) => v.name)).toEqual(['responses']);
    expect(r.history).toHaveLength(3);
    expect(r.history[2].trainLoss).toBeLessThan(r.history[0].trainLoss);
    expect(await exportMatchesEval(r, 300)).toBeLessThan(1e-5);
    await expect(trainDecoder({ kind: 'cnn', data, out: join(work, 'x'), anchor: 'none', epochs: 1, quiet: true, log: quiet })).rejects.toThrow(/needs the ridge anchor \(or --recipe report\)/);
  }, 240_000);

  it('GAN with MEI readin: generator and discriminator alternate, loss falls; export equals eval pass', async () => {
    // A fixture of 24 MEIs: the encoder -> MEIs path has its own tests (encoder.test.ts).
    const meis = join(work, 'meis');
    meiFixture(meis, 24, 36, 64);
    const out = join(work, 'gan');
    const r = await trainDecoder({ kind: 'gan', data, out, meis, recipe: 'report', epochs: 3, quiet: true, log: quiet });
    expect(r.history).toHaveLength(3);
    expect(r.history[2].trainLoss).toBeLessThan(r.history[0].trainLoss);
    const m = loadBundle(out).manifest;
    expect(m.kind).toBe('gan');
    expect((m.training.config as { meiNeurons: number }).meiNeurons).toBe(24);
    const checked = onnxCheck(join(out, 'model.onnx'));
    if (checked !== undefined) expect(checked).toBe('ok 17');
    expect(await exportMatchesEval(r, 300)).toBeLessThan(1e-5);
  }, 300_000);

  it('compare prints Table I for several bundles and writes the figure', async () => {
    const r = await compareBundles([join(work, 'cnn'), join(work, 'gan')], data, { figure: join(work, 'compare.png'), latencyRuns: 5 });
    expect(r.rows.map((x) => x.kind)).toEqual(['cnn', 'gan']);
    expect(r.table.split('\n')[0]).toContain('| decoder | kind | SSIML | MSE | FID-64 | SSIM | PixCorr |');
    expect(r.table.split('\n')).toHaveLength(4);
    for (const row of r.rows) {
      expect(row.metrics.fid).toBeGreaterThan(0);
      expect(row.latencyMs.p50).toBeGreaterThan(0);
    }
    expect(existsSync(join(work, 'compare.png'))).toBe(true);
    // Two bundles of one recipe carry one name: the table tells them apart by folder.
    const same = await compareBundles([join(work, 'cnn'), join(work, 'cnn-resume')], data, { figure: join(work, 'compare-same.png'), latencyRuns: 2, images: 2 });
    expect(same.rows.map((x) => x.name)).toEqual([`${r.rows[0].name} (${work.split('/').pop()}/cnn)`, `${r.rows[0].name} (${work.split('/').pop()}/cnn-resume)`]);
  }, 180_000);

  it('B-All: two sessions train one shared core with a readin and discriminator head each; one bundle per session', async () => {
    const other = await tinyDataset({ trainTrials: 160, validationTrials: 24 }, 150);
    const out = join(work, 'gan-ball');
    // The FC readin keeps this test cheap; the MEI readin goes through the same per-session path.
    // The default recipe anchors each session on its own ridge fit; here fed out-of-fold in training.
    const r = await trainDecoder({ kind: 'gan', data: [data, other], out, readin: 'fc', epochs: 2, anchorFolds: 5, quiet: true, log: quiet });
    expect([r.generator.stepInputNames.anchor_0, r.generator.stepInputNames.anchor_1]).toEqual(['readin_0_anchor_image', 'readin_1_anchor_image']);
    expect(r.bundles).toEqual([join(out, 'session0'), join(out, 'session1')]);
    const [a, b] = r.bundles.map((d) => loadBundle(d));
    expect([a.manifest.input.neurons, b.manifest.input.neurons]).toEqual([300, 150]);
    const core = (m: Uint8Array): number[] => Array.from(readModel(m).graph.initializers.get('core/layer0/conv/weight')!.tensor.data as Float32Array);
    expect(core(a.model)).toEqual(core(b.model));
    expect(readModel(a.model).graph.initializers.has('readin_0/fc/weight')).toBe(true);
    expect(readModel(b.model).graph.initializers.has('readin_1/fc/weight')).toBe(true);
    expect(r.history[0].fid_1).toBeGreaterThan(0);
    expect(r.manifests.every((m) => m.metrics.test!.fid! > 0)).toBe(true);
  }, 300_000);

  it("cortexcast's CNN on two sessions: one refiner shared by both, each read in by its own ridge; one bundle per session", async () => {
    const other = await tinyDataset({ trainTrials: 160, validationTrials: 24 }, 150);
    const out = join(work, 'cnn-shared');
    const r = await trainDecoder({ kind: 'cnn', data: [data, other], out, epochs: 2, lr: 1e-3, validateEvery: 10, quiet: true, log: quiet });
    expect([r.generator.stepInputNames.anchor_0, r.generator.stepInputNames.anchor_1]).toEqual(['anchor_0_image', 'anchor_1_image']);
    expect(r.bundles).toEqual([join(out, 'session0'), join(out, 'session1')]);
    const [a, b] = r.bundles.map((d) => readModel(loadBundle(d).model).graph);
    expect([a.inputs[0].shape[1], b.inputs[0].shape[1]]).toEqual([300, 150]);
    const weights = (g: typeof a, scope: string): Map<string, number[]> =>
      new Map([...g.initializers].filter(([k]) => k.startsWith(scope)).map(([k, v]) => [k, Array.from(v.tensor.data as Float32Array)]));
    const [ra, rb] = [weights(a, 'refiner/'), weights(b, 'refiner/')];
    expect(ra.size).toBeGreaterThan(3);
    expect(ra).toEqual(rb);
    // Trained: the shared refiner's last layer is no longer the zero it starts at.
    expect([...ra].filter(([k]) => k.startsWith('refiner/out/')).flatMap(([, v]) => v).some((v) => v !== 0)).toBe(true);
    // Each bundle reads its own neurons through its own ridge.
    expect(a.initializers.get('anchor/weight_0')!.tensor.dims[0]).toBe(300);
    expect(b.initializers.get('anchor/weight_0')!.tensor.dims[0]).toBe(150);
    expect(r.manifests.every((m) => m.metrics.test!.ssiml! > 0)).toBe(true);
    await expect(trainDecoder({ kind: 'cnn', data: [data, other], out: join(work, 'x'), recipe: 'report', epochs: 1, quiet: true, log: quiet })).rejects.toThrow(/report's CNN trains on one/);
  }, 300_000);

  it('GAN without MEIs says what it needs', async () => {
    await expect(trainDecoder({ kind: 'gan', data, out: join(work, 'x'), epochs: 1, quiet: true, log: quiet })).rejects.toThrow(/needs --meis/);
  });
});
