import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { bilinearSample } from '../../src/models/architectures/encoder.js';
import { loadBundle } from '../../src/models/bundle.js';
import { gaussianKernel2d, startImage } from '../../src/models/decoder-runner.js';
import type { EncoderConfig } from '../../src/models/architectures/encoder.js';
import { buildImageStep, buildSelectedMeiStep } from '../../src/training/encoder/image-optimisation.js';
import { newGraph, readModel, tensor } from '../../src/models/onnx/index.js';
import { createSession, runOnce } from '../../src/models/ort.js';
import { Rng } from '../../src/models/rng.js';
import { loadServerConfig } from '../../src/server/config.js';
import { CortexcastServer } from '../../src/server/server.js';
import { SensoriumDataset } from '../../src/datasets/sensorium.js';
import { evaluateBundle } from '../../src/training/eval/evaluate.js';
import { scoreImages } from '../../src/training/eval/metrics/image-metrics.js';
import { generateMeis, loadMeis, selectNeurons } from '../../src/training/encoder/meis.js';
import { trainEncoder } from '../../src/training/encoder/train-encoder.js';
import { trainInvenc } from '../../src/training/encoder/train-invenc.js';
import { EncoderPairs } from '../../src/training/decoders/encoder-pairs.js';
import { cropResize } from '../../src/datasets/image-ops.js';
import { DEFAULT_PREPROCESS, prepareDataset } from '../../src/datasets/preprocess.js';
import { onnxCheck } from '../helpers/onnx-check.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';
import { fdCheck } from './autodiff/fd-check.js';

// Positions away from pixel grid lines (where bilinear interpolation has kinks): features 4 x 5.
const POSITIONS = [0.23, -0.71, 0.61, -0.12, -0.87, 0.52, 0.11, 0.07, 0.79, -0.45, -0.33, 0.88];

describe('bilinear sampling of the Gaussian readout', () => {
  it('reads the pixel at a grid position and interpolates between pixels', async () => {
    const g = newGraph('t');
    const f = g.input('f', 'float32', [1, 1, 3, 5]);
    const pos = g.input('p', 'float32', [3, 2]);
    g.output(bilinearSample({ g, rng: new Rng(1) }, f, pos), 'y');
    const { session } = await createSession(g);
    const feat = Float32Array.from({ length: 15 }, (_, i) => i * i);
    // (x, y): pixel (col 0, row 0); pixel (col 4, row 2); halfway between cols 1 and 2 on row 1.
    const out = await runOnce(session, { f: tensor('float32', [1, 1, 3, 5], feat), p: tensor('float32', [3, 2], [-1, -1, 1, 1, -0.25, 0]) });
    const y = out.y.data as Float32Array;
    expect(y[0]).toBeCloseTo(feat[0], 5);
    expect(y[1]).toBeCloseTo(feat[14], 5);
    expect(y[2]).toBeCloseTo((feat[6] + feat[7]) / 2, 4);
  });

  it('gradients w.r.t. features and shared positions match finite differences (Gather path)', async () => {
    const r = await fdCheck(
      [{ shape: [2, 3, 4, 5] }, { shape: [6, 2], data: POSITIONS }],
      (g, x) => bilinearSample({ g, rng: new Rng(1) }, x[0], x[1]),
      { samples: 12 },
    );
    expect(r.worst).toBeLessThanOrEqual(1);
  });

  it('gradients w.r.t. features and per-image positions match finite differences (GatherElements path)', async () => {
    const r = await fdCheck(
      [{ shape: [2, 3, 4, 5] }, { shape: [2, 3, 2], data: POSITIONS }],
      (g, x) => bilinearSample({ g, rng: new Rng(1) }, x[0], x[1]),
      { samples: 12 },
    );
    expect(r.worst).toBeLessThanOrEqual(1);
  });
});

describe('encoder, MEIs and the inverted encoder on a tiny simulated session', () => {
  let data: string;
  let work: string;
  let encoderDir: string;
  let trained: Awaited<ReturnType<typeof trainEncoder>>;
  beforeAll(async () => {
    data = await tinyDataset();
    work = mkdtempSync(join(tmpdir(), 'cc-enc-'));
    encoderDir = join(work, 'encoder');
    trained = await trainEncoder({ data: [data], out: encoderDir, epochs: 4, batch: 16, quiet: true, log: () => undefined });
  }, 240_000);

  it('encoder pairs: new images are windows of train stimuli; responses are the prediction plus the source trial residual', async () => {
    const d = prepareDataset(SensoriumDataset.open(data), DEFAULT_PREPROCESS, { quiet: true });
    const P = d.height * d.width;
    // The full window unmirrored is the image itself; mirrored, its left-right flip.
    const img = d.train.images.subarray(0, P);
    expect(Array.from(cropResize(img, d.height, d.width, { top: 0, left: 0, height: d.height, width: d.width, flip: false }, d.height, d.width)).every((v, i) => Math.abs(v - img[i]) < 1e-5)).toBe(true);
    const flipped = cropResize(img, d.height, d.width, { top: 0, left: 0, height: d.height, width: d.width, flip: true }, d.height, d.width);
    expect(Math.abs(flipped[5] - img[d.width - 1 - 5])).toBeLessThan(1e-5);
    const pairs = await EncoderPairs.create(encoderDir, d);
    const rows = [0, 1, 2, 3, 4, 5, 6, 7];
    const responses = new Float32Array(rows.length * d.neurons);
    const images = new Float32Array(rows.length * P);
    await pairs.fill(rows, rows, new Rng(3), responses, images);
    expect(responses.every((v) => v >= 0 && Number.isFinite(v))).toBe(true);
    // Each made image resembles its source stimulus (a window of it, maybe mirrored) more than the other sources.
    const own = rows.map((r) => {
      const a = images.subarray(r * P, (r + 1) * P);
      const best = (src: Float32Array): number => Math.max(pearson(a, src), pearson(a, Float32Array.from(src, (_, i) => src[Math.floor(i / d.width) * d.width + d.width - 1 - (i % d.width)])));
      return { self: best(d.train.images.subarray(r * P, (r + 1) * P)), other: best(d.train.images.subarray(((r + 1) % 8) * P, (((r + 1) % 8) + 1) * P)) };
    });
    expect(own.filter((o) => o.self > o.other).length).toBeGreaterThanOrEqual(6);
    // A dataset with other neurons is refused with the reason.
    const fewer = { ...d, neurons: d.neurons - 1, unitIds: d.unitIds.slice(1) };
    await expect(EncoderPairs.create(encoderDir, fewer)).rejects.toThrow(/CC_ERR_OPTION.*predicts other neurons/);
  });

  it('training lowers the Poisson loss and beats a mean predictor on validation correlation', () => {
    const h = trained.history;
    expect(h.length).toBeGreaterThanOrEqual(2);
    expect(h[h.length - 1].trainLoss).toBeLessThan(h[0].trainLoss);
    // A mean predictor has correlation 0 with every neuron.
    const s = trained.sessions[0].scores;
    expect(s.validationCorrelation).toBeGreaterThan(0.1);
    expect(s.testCorrelationNoiseFree!).toBeGreaterThan(s.testCorrelationSingleTrial);
    const m = loadBundle(encoderDir).manifest;
    expect(m.kind).toBe('encoder');
    expect(m.metrics.test!.testCorrelationSingleTrial).toBeCloseTo(s.testCorrelationSingleTrial, 6);
    const checked = onnxCheck(join(encoderDir, 'model.onnx'));
    if (checked !== undefined) expect(checked).toBe('ok 17');
  });

  it('encoder bundles are refused where a decoder is needed, with the reason', async () => {
    await expect(evaluateBundle(encoderDir, data, { fid: 0 })).rejects.toThrow(/CC_ERR_WRONG_KIND: bundle .* is a encoder bundle; it maps images to responses/);
  });

  it('the selected-neuron MEI step equals the generic step (all readouts) on the same images', async () => {
    const enc = loadBundle(encoderDir);
    const cfg = (enc.manifest.training.config as { encoder: EncoderConfig }).encoder;
    const fast = (await createSession(buildSelectedMeiStep(enc.model, cfg, 3, { blurRadius: 3 }))).session;
    const slow = (await createSession(buildImageStep(enc.model, 'mei', { blurRadius: 3 }))).session;
    const rng = new Rng(5);
    const feeds = {
      image: tensor('float32', [3, 1, 36, 64], Float32Array.from({ length: 3 * 2304 }, () => rng.normal() * 0.15)),
      neuron: tensor('int64', [3, 1], [0, 57, 299]),
      lr: tensor('float32', [], [1]),
      blur_kernel: tensor('float32', [1, 1, 7, 7], gaussianKernel2d(1, 3)),
    };
    const [a, b] = [await runOnce(fast, feeds), await runOnce(slow, feeds)];
    const diff = (x: ArrayLike<number>, y: ArrayLike<number>): number => Math.max(...Array.from(x, (v, i) => Math.abs(v - y[i])));
    expect(diff(a.score.data as Float32Array, b.score.data as Float32Array)).toBeLessThan(1e-4);
    expect(diff(a.image_next.data as Float32Array, b.image_next.data as Float32Array)).toBeLessThan(1e-4);
  });

  it('MEIs of well-predicted neurons correlate with their true receptive fields; a rerun resumes', async () => {
    const out = join(work, 'meis');
    const neurons = selectNeurons(encoderDir, 'top:12')!;
    const r = await generateMeis({ encoder: encoderDir, out, neurons, steps: 60, batch: 6, quiet: true, log: () => undefined });
    expect(r.meis).toHaveLength(12 * 36 * 64);
    expect(r.rfCorrelation!.all).toBeGreaterThan(0.3);
    // MEIs are normalised after every step as the report says: std 0.15, within [-1, 1].
    const first = r.meis.subarray(0, 36 * 64);
    const mean = first.reduce((a, v) => a + v, 0) / first.length;
    const std = Math.sqrt(first.reduce((a, v) => a + (v - mean) ** 2, 0) / first.length);
    expect(std).toBeGreaterThan(0.1);
    expect(std).toBeLessThan(0.16);
    expect(existsSync(join(out, 'meis.png'))).toBe(true);
    const again = await generateMeis({ encoder: encoderDir, out, neurons, steps: 60, batch: 6, quiet: true, log: () => undefined });
    expect(again.seconds).toBeLessThan(r.seconds);
    expect(Array.from(again.meis)).toEqual(Array.from(r.meis));
    expect(loadMeis(out).neuronIndex).toEqual(neurons);
    await expect(generateMeis({ encoder: encoderDir, out, neurons, steps: 61, batch: 6, quiet: true, log: () => undefined })).rejects.toThrow(/other settings/);
  }, 120_000);

  it('inversion improves SSIM over its start image (served: test/server/served-equals-offline.test.ts)', async () => {
    const out = join(work, 'invenc');
    const r = await trainInvenc({ encoder: encoderDir, out, grid: { steps: [10, 30], lr: [1000], blurSigma: [1] }, searchImages: 12, log: () => undefined });
    expect(r.search).toHaveLength(2);
    const b = loadBundle(out);
    expect(b.manifest.kind).toBe('invenc');
    expect(b.manifest.iterative!.steps).toBe(r.best.steps);
    // The step graph (encoder forward, its gradient, blur, rescale) is standard ONNX.
    const checked = onnxCheck(join(out, 'model.onnx'));
    if (checked !== undefined) expect(checked).toBe('ok 17');
    const ev = await evaluateBundle(out, data, { fid: 0 });
    const start = new Float32Array(ev.count * 36 * 64);
    for (let i = 0; i < ev.count; i++) start.set(startImage(b.manifest.iterative!.seed, 36, 64), i * 36 * 64);
    const base = scoreImages(ev.targets, start, ev.count, 36, 64);
    expect(ev.metrics.ssim).toBeGreaterThan(base.ssim + 0.02);
    expect(ev.metrics.pixcorr).toBeGreaterThan(base.pixcorr + 0.1);

    expect(JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8')).training.config.search).toHaveLength(2);
  }, 180_000);

  it('the server refuses an encoder bundle at start with the reason', async () => {
    const server = new CortexcastServer(loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'enc', path: encoderDir }] } }), () => undefined);
    await expect(server.start()).rejects.toThrow(/CC_ERR_WRONG_KIND/);
    await server.close().catch(() => undefined);
  });

  it('several sessions train one shared core with one readout each, one bundle per session', async () => {
    const other = await tinyDataset({ trainTrials: 96, validationTrials: 24 }, 120);
    const out = join(work, 'multi');
    const r = await trainEncoder({ data: [data, other], out, epochs: 1, batch: 8, quiet: true, log: () => undefined });
    expect(r.sessions).toHaveLength(2);
    const [a, b] = r.sessions.map((s) => loadBundle(s.dir));
    expect([a.manifest.input.neurons, b.manifest.input.neurons]).toEqual([300, 120]);
    // The same core weights in both exported encoders.
    const core = (m: Uint8Array): number[] => {
      const g = readModel(m).graph;
      return Array.from(g.initializers.get('core/layer0/conv/weight')!.tensor.data as Float32Array);
    };
    expect(core(a.model)).toEqual(core(b.model));
    expect(r.sessions.every((s) => Number.isFinite(s.scores.validationCorrelation))).toBe(true);
  }, 120_000);
});

function pearson(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < a.length; i++) {
    ma += a[i] / a.length;
    mb += b[i] / a.length;
  }
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += (a[i] - ma) * (b[i] - mb);
    aa += (a[i] - ma) ** 2;
    bb += (b[i] - mb) ** 2;
  }
  return ab / Math.sqrt(aa * bb);
}
