import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { CONV_READIN_PROFILES, convReadin, MLP_READIN_PROFILES, mlpReadin } from '../../src/models/architectures/autoencoder.js';
import type { LayerContext } from '../../src/models/layers.js';
import { loadBundle } from '../../src/models/bundle.js';
import { newGraph, readModel, tensor, type Value } from '../../src/models/onnx/index.js';
import { createSession, runOnce } from '../../src/models/ort.js';
import { Rng } from '../../src/models/rng.js';
import { SensoriumDataset } from '../../src/datasets/sensorium.js';
import { prepareDataset } from '../../src/datasets/preprocess.js';
import { trainEncoder } from '../../src/training/encoder/train-encoder.js';
import { evaluateBundle } from '../../src/training/eval/evaluate.js';
import { readAutoencoder } from '../../src/training/latent/autoencoder-folder.js';
import { resampleHost } from '../../src/training/latent/images.js';
import { trainAutoencoder } from '../../src/training/latent/train-autoencoder.js';
import { trainFeatureDecoder } from '../../src/training/latent/train-feature-decoder.js';
import { trainLatent } from '../../src/training/latent/train-latent.js';
import { onnxCheck } from '../helpers/onnx-check.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

const quiet = (): void => undefined;

describe('latent-space decoders (VAE and feature space)', () => {
  let data: string;
  let work: string;
  let ae: string;

  beforeAll(async () => {
    data = await tinyDataset();
    work = mkdtempSync(join(tmpdir(), 'cc-latent-'));
    ae = join(work, 'vae');
    await trainAutoencoder({ data: [data], out: ae, photoCrops: 400, batch: 16, maxSteps: 80, validateEvery: 40, quiet: true, log: quiet });
  }, 900_000);

  it('the VAE learns: its loss falls and it reconstructs held-out photos better than the mean image', () => {
    const { manifest } = readAutoencoder(ae);
    expect(manifest.latent).toEqual([4, 8, 8]);
    expect(manifest.images.excludedPhotos).toEqual(expect.arrayContaining(['french-alpine-landscape', 'nagasaki-boats']));
    expect(manifest.images.photos).not.toContain('french-alpine-landscape');
    expect(manifest.heldOut.reconstruction.mse).toBeLessThan(manifest.heldOut.meanImage.mse);
    const history = JSON.parse(readFileSync(join(ae, 'run', 'metrics.json'), 'utf8')) as { mse: number; trainLoss: number }[];
    expect(history.length).toBe(2);
    expect(history[1].trainLoss).toBeLessThan(history[0].trainLoss);
    expect(history[1].mse).toBeLessThan(history[0].mse);
    for (const f of ['encoder.onnx', 'decoder.onnx']) if (onnxCheck(join(ae, f)) !== undefined) expect(onnxCheck(join(ae, f))).toMatch(/^ok/);
  });

  it('trains the readin on latents, and the chained bundle equals readin then decoder run separately', async () => {
    const out = join(work, 'latent');
    const r = await trainLatent({ autoencoder: ae, data, out, maxSteps: 30, validateEvery: 15, batch: 16, quiet: true, log: quiet });
    expect(r.frozen.history.length).toBe(2);
    expect(r.frozen.history[1].trainLoss).toBeLessThan(r.frozen.history[0].trainLoss);
    const b = loadBundle(out);
    expect(b.manifest.kind).toBe('latent');
    expect(b.manifest.metrics.test?.ssiml).toBeGreaterThan(0);
    if (onnxCheck(join(out, 'model.onnx')) !== undefined) expect(onnxCheck(join(out, 'model.onnx'))).toMatch(/^ok/);

    const worst = await halvesDifference(out, ae, data, (ctx, x, latent) => mlpReadin(ctx, x, latent, MLP_READIN_PROFILES.small));
    expect(worst).toBeLessThan(1e-5);
    // eval reads it like any decoder.
    const ev = await evaluateBundle(out, data, {});
    expect(ev.metrics.mse).toBeGreaterThan(0);
  }, 300_000);

  it('--finetune trains readin and decoder end to end (with the cycle term through an encoder) and keeps the frozen version beside it', async () => {
    const encoder = join(work, 'encoder');
    await trainEncoder({ data: [data], out: encoder, epochs: 1, batch: 16, quiet: true, log: quiet });
    const out = join(work, 'latent-ft');
    const r = await trainLatent({ autoencoder: ae, data, out, maxSteps: 6, validateEvery: 3, batch: 8, finetune: true, cycleEncoder: encoder, cycleWeight: 0.1, quiet: true, log: quiet });
    expect(r.finetuned).toBeDefined();
    expect(loadBundle(join(out, 'frozen')).manifest.kind).toBe('latent');
    const ft = loadBundle(out).manifest;
    expect((ft.training.config.finetune as { cycle?: { weight: number } }).cycle?.weight).toBe(0.1);
    // Fine-tuning starts from the frozen bundle's weights: its first validation is close to the frozen best, not to a random readin.
    expect(Math.abs(r.finetuned!.history[0].mse - r.frozen.best.mse)).toBeLessThan(0.05);
    // --resume: the finished frozen stage is kept as it is, the fine-tuning continues from its checkpoint.
    const again = await trainLatent({ autoencoder: ae, data, out, maxSteps: 9, validateEvery: 3, batch: 8, finetune: true, cycleEncoder: encoder, cycleWeight: 0.1, resume: true, quiet: true, log: quiet });
    expect(again.frozen.history).toEqual(r.frozen.history);
    expect(again.finetuned!.history.map((h) => h.step)).toEqual([3, 6, 9]);
  }, 300_000);

  it("the realtime VAE (decoder widths 8/16/32) chains into a latent bundle whose decoder is the realtime one; the feature decoder refuses 'realtime'", async () => {
    const rae = join(work, 'vae-realtime');
    const r = await trainAutoencoder({ data: [data], out: rae, profile: 'realtime', photoCrops: 200, batch: 16, maxSteps: 40, validateEvery: 20, quiet: true, log: quiet });
    expect(r.manifest.profile).toBe('realtime');
    expect(r.manifest.architecture).toMatchObject({ channels: [8, 16, 32], latentChannels: 4 });
    expect(r.manifest.latent).toEqual([4, 8, 8]);
    expect(r.history[1].trainLoss).toBeLessThan(r.history[0].trainLoss);
    const out = join(work, 'latent-realtime');
    await trainLatent({ autoencoder: rae, data, out, maxSteps: 6, validateEvery: 3, batch: 16, quiet: true, log: quiet });
    // The served graph carries the realtime decoder's weights: the last transposed convolution maps 16 -> 8 channels.
    const inits = readModel(loadBundle(out).model).graph.initializers;
    const up2 = [...inits.keys()].find((k) => k.startsWith('decoder/') && k.includes('up2') && k.endsWith('weight'));
    expect(up2).toBeDefined();
    expect(inits.get(up2!)!.tensor.dims).toEqual([16, 8, 4, 4]);
    expect(await halvesDifference(out, rae, data, (ctx, x, latent) => mlpReadin(ctx, x, latent, MLP_READIN_PROFILES.small))).toBeLessThan(1e-5);
    await expect(trainFeatureDecoder({ data: [data], out: join(work, 'features-rt'), profile: 'realtime', maxSteps: 1, quiet: true, log: quiet })).rejects.toThrow(/realtime.*VAE/);
  }, 300_000);

  it('the feature-space variant: a decoder of MobileNetV2 features, then a conv readin, served as a latent bundle', async () => {
    const fae = join(work, 'features');
    const f = await trainFeatureDecoder({ data: [data], out: fae, layer: 'block_12_add', photoCrops: 100, batch: 8, maxSteps: 20, validateEvery: 10, quiet: true, log: quiet });
    expect(f.manifest.space).toBe('features');
    expect(f.manifest.latent).toEqual([96, 9, 16]);
    expect(f.history[1].trainLoss).toBeLessThan(f.history[0].trainLoss);
    const out = join(work, 'latent-features');
    await trainLatent({ autoencoder: fae, data, out, maxSteps: 4, validateEvery: 2, batch: 8, quiet: true, log: quiet });
    const b = loadBundle(out);
    expect(b.manifest.kind).toBe('latent');
    expect(b.manifest.training.config.space).toBe('features');
    if (onnxCheck(join(out, 'model.onnx')) !== undefined) expect(onnxCheck(join(out, 'model.onnx'))).toMatch(/^ok/);
    expect(await halvesDifference(out, fae, data, (ctx, x, latent) => convReadin(ctx, x, latent, CONV_READIN_PROFILES.small))).toBeLessThan(1e-5);
  }, 300_000);
});

/**
 * The largest difference between a latent bundle's output and its two halves run separately: the
 * bundle's readin weights in a readin-only graph, latent / latentScale, the autoencoder's own
 * decoder.onnx, resized on the host and z-scored with the dataset's statistics.
 */
async function halvesDifference(bundleDir: string, aeDir: string, data: string, readin: (ctx: LayerContext, x: Value, latent: [number, number, number]) => Value): Promise<number> {
  const b = loadBundle(bundleDir);
  const auto = readAutoencoder(aeDir);
  const prepared = prepareDataset(SensoriumDataset.open(data), undefined, { quiet: true });
  const n = prepared.neurons;
  const rows = 4;
  const responses = prepared.test.responses.subarray(0, rows * n);
  const g = newGraph('readin_only');
  const x = g.input('responses', 'float32', ['batch', n]);
  g.output(readin({ g, rng: new Rng(0), mode: 'eval' }, x, auto.manifest.latent), 'latent');
  const trained = readModel(b.model).graph.initializers;
  for (const [name] of g.initializers) if (name.startsWith('readin/')) g.setInitializer(name, trained.get(name)!.tensor);
  const z = (await runOnce((await createSession(g)).session, { responses: tensor('float32', [rows, n], responses) })).latent.data as Float32Array;
  const unscaled = Float32Array.from(z, (v) => v / auto.manifest.latentScale);
  const dec = (await createSession(auto.decoder)).session;
  const grey = (await runOnce(dec, { [dec.inputNames[0]]: tensor('float32', [rows, ...auto.manifest.latent], unscaled) }))[dec.outputNames[0]];
  const [gh, gw] = [grey.dims[2], grey.dims[3]];
  const chained = (await runOnce((await createSession(b.model)).session, { responses: tensor('float32', [rows, n], responses) })).image.data as Float32Array;
  const P = prepared.height * prepared.width;
  let worst = 0;
  for (let i = 0; i < rows; i++) {
    const img = resampleHost((grey.data as Float32Array).subarray(i * gh * gw, (i + 1) * gh * gw), gh, gw, prepared.height, prepared.width);
    for (let k = 0; k < P; k++) worst = Math.max(worst, Math.abs((img[k] * 255 - prepared.prep.imageMean) / prepared.prep.imageStd - chained[i * P + k]));
  }
  return worst;
}
