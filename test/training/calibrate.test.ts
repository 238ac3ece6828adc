import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecoderConnection, type FrameAck } from '../../clients/lib/index.js';
import { columnMeanStd } from '../../src/common/stats.js';
import { responseScaleVector } from '../../src/common/scaling.js';
import type { PreparedData, PreparedSplit } from '../../src/datasets/preprocess.js';
import { buildRidgeGraph } from '../../src/models/architectures/ridge.js';
import { loadBundle } from '../../src/models/bundle.js';
import { Rng } from '../../src/models/rng.js';
import { loadServerConfig } from '../../src/server/config.js';
import { CortexcastServer } from '../../src/server/server.js';
import { Calibrator, runGraph } from '../../src/training/calibrate/calibrator.js';
import { calibrateFromRecording } from '../../src/training/calibrate/from-recording.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';
import { runLiveCalibration, type ServedRefit } from '../../src/training/calibrate/live.js';
import { composeRidgeRefiner, refinerOnlyGraph, trainTransferRefiner } from '../../src/training/calibrate/refiner.js';
import { SampleSpaceSolver, solverFor, StatisticsSolver } from '../../src/training/calibrate/solve.js';
import { StimulusSet } from '../../src/training/calibrate/stimuli.js';
import { writeNpy } from '../../src/common/npy.js';
import { RidgeStatistics } from '../../src/training/calibrate/statistics.js';
import { DriftSimulator } from '../../src/training/data/drift-sim.js';
import { Gemm } from '../../src/training/engine/linalg.js';
import { fitRidge } from '../../src/training/ridge/ridge.js';

const H = 12;
const W = 16;
const P = H * W;

/** A toy animal: responses are a fixed linear map of the image, rectified, plus noise. */
function toyAnimal(neurons: number, seed: number): { map: Float32Array; frame: (image: Float32Array, rng: Rng) => Float32Array } {
  const rng = new Rng(seed);
  const map = Float32Array.from({ length: neurons * P }, () => rng.normal() / Math.sqrt(P));
  return {
    map,
    frame: (image, r) =>
      Float32Array.from({ length: neurons }, (_, i) => {
        let v = 0;
        for (let p = 0; p < P; p++) v += map[i * P + p] * (image[p] - 128) / 64;
        return Math.max(0, 1 + v + 0.3 * r.normal());
      }),
  };
}

const images = (count: number, seed: number): Float32Array[] => {
  const rng = new Rng(seed);
  return Array.from({ length: count }, () => Float32Array.from({ length: P }, () => 255 * rng.next()));
};

function split(tier: string, x: Float32Array, y: Float32Array, count: number): PreparedSplit {
  return { tier, count, images: y, responses: x, imageIds: Array.from({ length: count }, (_, i) => i), trials: Array.from({ length: count }, (_, i) => [i]) };
}

describe('calibration statistics', () => {
  it('incremental statistics give the batch ridge fit (same scaling, same lambda)', async () => {
    const N = 20;
    const n = 70;
    const animal = toyAnimal(N, 1);
    const rng = new Rng(2);
    const imgs = images(n, 3);
    const raw = imgs.map((im) => animal.frame(im, rng));
    const stats = new RidgeStatistics(N, P);
    raw.forEach((r, i) => stats.add(r, imgs[i], i));
    // The batch path: preprocessing as prepareDataset does it, then fitRidge.
    const flatRaw = new Float32Array(n * N);
    raw.forEach((r, i) => flatRaw.set(r, i * N));
    const scale = responseScaleVector(columnMeanStd(flatRaw, n, N).std, 'brainreader');
    let sum = 0;
    let sq = 0;
    for (const im of imgs) for (const v of im) ((sum += v), (sq += v * v));
    const mean = sum / (n * P);
    const std = Math.sqrt(sq / (n * P) - mean * mean);
    const x = Float32Array.from(flatRaw, (v, k) => v * scale[k % N]);
    const y = new Float32Array(n * P);
    imgs.forEach((im, i) => im.forEach((v, p) => (y[i * P + p] = (v - mean) / std)));
    const data = { neurons: N, unitIds: [], height: H, width: W, train: split('train', x, y, n), validation: split('validation', x.slice(0, 10 * N), y.slice(0, 10 * P), 10) } as unknown as PreparedData;
    const batch = await fitRidge(data, { alphas: [0.5] });

    const gemm = await Gemm.create();
    await stats.flush(gemm);
    const solver = new StatisticsSolver(stats);
    for (let i = 0; i < N; i++) expect(solver.stdScale[i]).toBeCloseTo(scale[i], 4);
    expect(solver.pixelMean).toBeCloseTo(mean, 6);
    expect(solver.pixelStd).toBeCloseTo(std, 6);
    const live = await solver.fit(gemm, batch.lambda);
    const maxAbs = Math.max(...batch.weights.map(Math.abs));
    for (let k = 0; k < batch.weights.length; k++) expect(Math.abs(live.weights[k] - batch.weights[k])).toBeLessThan(2e-3 * maxAbs);
    for (let p = 0; p < P; p++) expect(live.bias[p]).toBeCloseTo(batch.bias[p], 3);
  }, 60_000);

  it('a window forgets exactly the frames older than it; decay weights by age', async () => {
    const gemm = await Gemm.create();
    const N = 6;
    const rng = new Rng(4);
    const imgs = images(40, 5);
    const raw = imgs.map(() => Float32Array.from({ length: N }, () => rng.next()));
    const windowed = new RidgeStatistics(N, P, { kind: 'window', seconds: 10 });
    const recent = new RidgeStatistics(N, P);
    raw.forEach((r, i) => {
      windowed.add(r, imgs[i], i);
      if (i >= 29) recent.add(r, imgs[i], i);
    });
    expect(windowed.frames).toBe(11);
    await windowed.flush(gemm);
    await recent.flush(gemm);
    // Float32 products summed into float64: equal to a few parts in a million.
    for (let k = 0; k < windowed.xx.length; k++) expect(Math.abs(windowed.xx[k] - recent.xx[k])).toBeLessThan(1e-5 * (1 + Math.abs(recent.xx[k])));
    for (let k = 0; k < windowed.xy.length; k++) expect(Math.abs(windowed.xy[k] - recent.xy[k])).toBeLessThan(1e-5 * (1 + Math.abs(recent.xy[k])));
    const decayed = new RidgeStatistics(N, P, { kind: 'decay', seconds: 5 });
    decayed.add(raw[0], imgs[0], 0);
    decayed.add(raw[1], imgs[1], 5);
    await decayed.flush(gemm);
    // The newer frame weighs e times the older one.
    expect(decayed.sx[0]).toBeCloseTo(raw[0][0] + Math.E * raw[1][0], 5);
  });

  it('the sample-space solve (fewer frames than neurons) gives the primal fit, weighted frames included', async () => {
    const gemm = await Gemm.create();
    const N = 40;
    const animal = toyAnimal(N, 11);
    const rng = new Rng(12);
    const imgs = images(36, 13);
    for (const forgetting of [{ kind: 'none' }, { kind: 'decay', seconds: 8 }, { kind: 'window', seconds: 20 }] as const) {
      const stats = new RidgeStatistics(N, P, forgetting);
      imgs.slice(0, 30).forEach((im, i) => stats.add(animal.frame(im, rng), im, i));
      stats.forget(29);
      await stats.flush(gemm);
      expect(stats.rows?.length).toBe(forgetting.kind === 'window' ? 21 : 30);
      const sample = await solverFor(gemm, stats);
      expect(sample).toBeInstanceOf(SampleSpaceSolver);
      // The neurons x neurons sums are not kept while the frames are: brought up to date on request.
      expect(stats.gramCurrent).toBe(false);
      expect(() => new StatisticsSolver(stats)).toThrow(/ensureGram/);
      await stats.ensureGram(gemm);
      const primal = new StatisticsSolver(stats);
      expect(sample.meanDiagonal).toBeCloseTo(primal.meanDiagonal, 3);
      const lambda = 0.3 * primal.meanDiagonal;
      const [a, b] = [await sample.fit(gemm, lambda), await primal.fit(gemm, lambda)];
      const maxAbs = Math.max(...b.weights.map(Math.abs));
      for (let k = 0; k < b.weights.length; k++) expect(Math.abs(a.weights[k] - b.weights[k])).toBeLessThan(2e-3 * maxAbs);
      for (let p = 0; p < P; p++) expect(Math.abs(a.bias[p] - b.bias[p])).toBeLessThan(2e-3 * (1 + Math.abs(b.bias[p])));
      const heldRaw = new Float32Array(6 * N);
      const heldImages = new Float32Array(6 * P);
      imgs.slice(30).forEach((im, r) => (heldRaw.set(animal.frame(im, rng), r * N), heldImages.set(im, r * P)));
      const held = { count: 6, raw: heldRaw, images: heldImages };
      const targets = Float32Array.from(heldImages, (v) => (v - primal.pixelMean) / primal.pixelStd);
      expect(await sample.heldOutMse(gemm, lambda, held, targets)).toBeCloseTo(await primal.heldOutMse(gemm, lambda, held, targets), 4);
    }
    // Past as many frames as neurons (nothing forgotten), the frames are no longer kept: the primal solve takes over.
    const many = new RidgeStatistics(8, P);
    imgs.slice(0, 12).forEach((im, i) => many.add(Float32Array.from({ length: 8 }, () => rng.next()), im, i));
    await many.flush(gemm);
    expect(many.rows).toBeUndefined();
    expect(await solverFor(gemm, many)).toBeInstanceOf(StatisticsSolver);
  }, 60_000);

  it('restricting the statistics to kept units equals statistics of the restricted frames', async () => {
    const gemm = await Gemm.create();
    const N = 10;
    const rng = new Rng(14);
    const imgs = images(20, 15);
    const raw = imgs.map(() => Float32Array.from({ length: N }, () => rng.next()));
    const columns = [7, 2, 3, 9];
    const full = new RidgeStatistics(N, P, { kind: 'window', seconds: 12 });
    const direct = new RidgeStatistics(columns.length, P, { kind: 'window', seconds: 12 });
    raw.forEach((r, i) => {
      full.add(r, imgs[i], i);
      direct.add(Float32Array.from(columns, (c) => r[c]), imgs[i], i);
    });
    await full.flush(gemm);
    // These frames are still pending when the set is restricted: they must come along.
    const later = imgs.map(() => Float32Array.from({ length: N }, () => rng.next()));
    later.slice(0, 5).forEach((r, i) => {
      full.add(r, imgs[i], 20 + i);
      direct.add(Float32Array.from(columns, (c) => r[c]), imgs[i], 20 + i);
    });
    const kept = full.restricted(columns);
    await kept.flush(gemm);
    await direct.flush(gemm);
    await kept.ensureGram(gemm);
    await direct.ensureGram(gemm);
    expect(kept.frames).toBe(direct.frames);
    for (let a = 0; a < columns.length; a++) for (let b = 0; b <= a; b++) expect(kept.xx[a * columns.length + b]).toBeCloseTo(direct.xx[a * columns.length + b], 4);
    for (let k = 0; k < direct.xy.length; k++) expect(kept.xy[k]).toBeCloseTo(direct.xy[k], 2);
    expect(kept.rows?.length).toBe(direct.rows?.length);
    // Forgetting goes on in the restricted set as in the direct one.
    kept.forget(40);
    direct.forget(40);
    await kept.flush(gemm);
    await direct.flush(gemm);
    expect(kept.frames).toBe(direct.frames);
    for (let k = 0; k < direct.sx.length; k++) expect(kept.sx[k]).toBeCloseTo(direct.sx[k], 4);
  });

  it('restricting statistics whose neurons x neurons sums are not built yet keeps what a solve needs', async () => {
    const gemm = await Gemm.create();
    const rng = new Rng(30);
    const imgs = images(7, 31);
    const raw = imgs.map(() => Float32Array.from({ length: 10 }, () => rng.next()));
    const full = new RidgeStatistics(10, P);
    raw.forEach((r, i) => full.add(r, imgs[i], i));
    await full.flush(gemm);
    expect(full.gramCurrent).toBe(false);
    const columns = [0, 1, 2, 3, 4, 5];
    const kept = full.restricted(columns);
    const direct = new RidgeStatistics(6, P);
    raw.forEach((r, i) => direct.add(Float32Array.from(columns, (c) => r[c]), imgs[i], i));
    await direct.flush(gemm);
    const [a, b] = [await solverFor(gemm, kept), await solverFor(gemm, direct)];
    const lambda = 0.5 * b.meanDiagonal;
    const [fa, fb] = [await a.fit(gemm, lambda), await b.fit(gemm, lambda)];
    for (let k = 0; k < fb.weights.length; k++) expect(fa.weights[k]).toBeCloseTo(fb.weights[k], 3);
    // Later frames fold in as usual.
    kept.add(Float32Array.from(columns, (c) => raw[0][c]), imgs[0], 8);
    await kept.flush(gemm);
    expect(kept.frames).toBe(8);
  });

  it('a new unit set after a pause longer than the window does not carry the forgotten calibration over', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cc-cal-pause-'));
    const lines: string[] = [];
    const cal = new Calibrator({ name: 'mouse-c', modelsDir: dir, height: H, width: W, minFrames: 10, alphas: [1], forgetting: { kind: 'window', seconds: 60 }, log: (l) => lines.push(l) });
    const rng = new Rng(32);
    const animal = toyAnimal(12, 33);
    const ids1 = Array.from({ length: 12 }, (_, i) => i + 1);
    images(40, 34).forEach((im, i) => cal.add({ raw: animal.frame(im, rng), image: im, t: i, imageId: i + 1, unitIds: ids1 }));
    expect((await cal.refit())?.source).toBe('own');
    // The next day: one ROI lost; a single frame so far.
    const ids2 = ids1.slice(1);
    const next = images(30, 35);
    const frame = (k: number): Float32Array => animal.frame(next[k], rng).subarray(1);
    cal.add({ raw: frame(0), image: next[0], t: 86_400, imageId: 500, unitIds: ids2 });
    expect(await cal.refit()).toBeUndefined();
    for (let k = 1; k < 30; k++) cal.add({ raw: frame(k), image: next[k], t: 86_400 + k, imageId: 500 + k, unitIds: ids2 });
    const r = await cal.refit();
    expect(r?.source).toBe('own');
    expect(r?.neurons).toBe(11);
    expect(lines.some((l) => /serving the 11 kept units with the earlier/.test(l))).toBe(false);
  });

  it('after an ROI change the kept units serve with the earlier calibration until the new set fits better on its own', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cc-cal-carry-'));
    const lines: string[] = [];
    const cal = new Calibrator({ name: 'mouse-b', modelsDir: dir, height: H, width: W, minFrames: 10, alphas: [0.1, 1, 10], log: (l) => lines.push(l) });
    const rng = new Rng(16);
    const day1 = toyAnimal(16, 17);
    const ids1 = Array.from({ length: 16 }, (_, i) => 100 + i);
    images(60, 18).forEach((im, i) => cal.add({ raw: day1.frame(im, rng), image: im, t: i, imageId: i + 1, unitIds: ids1 }));
    expect((await cal.refit())?.source).toBe('own');
    // Day 2: units 100..103 lost, 300..301 found, and the kept units respond as another animal would (a strong change).
    const ids2 = [...ids1.slice(4), 300, 301];
    const day2 = toyAnimal(14, 19);
    const day2Images = images(700, 20);
    day2Images.slice(0, 12).forEach((im, i) => cal.add({ raw: day2.frame(im, rng), image: im, t: 100 + i, imageId: 5000 + i, unitIds: ids2 }));
    const carried = await cal.refit();
    expect(carried?.source).toBe('carried');
    expect(carried?.neurons).toBe(14);
    expect(carried?.frames).toBeGreaterThan(60);
    const b = loadBundle(join(dir, 'mouse-b'));
    expect(b.unitIds).toEqual(ids2);
    // The new units weigh nothing in the carried fit.
    expect([...carried!.ridge.weights.subarray(12 * P)].every((v) => v === 0)).toBe(true);
    expect(lines.some((l) => /serving the 12 kept units with the earlier/.test(l))).toBe(true);
    let last = carried;
    for (let k = 0; k < 16 && last?.source === 'carried'; k++) {
      day2Images.slice(12 + 40 * k, 52 + 40 * k).forEach((im, i) => cal.add({ raw: day2.frame(im, rng), image: im, t: 200 + 40 * k + i, imageId: 6000 + 40 * k + i, unitIds: ids2 }));
      last = await cal.refit();
    }
    expect(last?.source).toBe('own');
    expect(lines.some((l) => /own fit .* now beats the carried-over one on its held-out frames \(2 refits in a row\)/.test(l))).toBe(true);
  }, 60_000);

  it('a changed unit set produces a bundle for the new neurons, not an error', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cc-cal-'));
    const cal = new Calibrator({ name: 'mouse-a', modelsDir: dir, height: H, width: W, minFrames: 10, alphas: [1], log: () => undefined });
    const rng = new Rng(6);
    const day1 = toyAnimal(15, 7);
    const day2 = toyAnimal(12, 8);
    const ids1 = Array.from({ length: 15 }, (_, i) => 100 + i);
    // Day 2: units 100..104 lost, 200..201 new, the rest kept.
    const ids2 = [...ids1.slice(5), 200, 201];
    images(30, 9).forEach((im, i) => cal.add({ raw: day1.frame(im, rng), image: im, t: i, imageId: i + 1, unitIds: ids1 }));
    const first = await cal.refit();
    expect(first?.neurons).toBe(15);
    expect(loadBundle(join(dir, 'mouse-a')).unitIds).toEqual(ids1);
    images(30, 10).forEach((im, i) => cal.add({ raw: day2.frame(im, rng), image: im, t: 100 + i, imageId: 1000 + i, unitIds: ids2 }));
    const second = await cal.refit();
    expect(second?.neurons).toBe(12);
    expect(second?.unitSet).not.toBe(first?.unitSet);
    const b = loadBundle(join(dir, 'mouse-a'));
    expect(b.unitIds).toEqual(ids2);
    expect(b.manifest.input.neurons).toBe(12);
    expect(b.manifest.metrics.validation?.calibration_frames).toBeGreaterThan(20);
  }, 60_000);
});

describe('calibration from a recording', () => {
  it('reads a dataset in trial order and writes a bundle per refit, each from more frames', async () => {
    const data = await tinyDataset({}, 120);
    const out = mkdtempSync(join(tmpdir(), 'cc-cal-from-'));
    const refits = await calibrateFromRecording({ from: data, tier: 'train', rate: 2, everySeconds: 40, name: 'day1', modelsDir: out, height: 36, width: 64, log: () => undefined });
    expect(refits.length).toBeGreaterThanOrEqual(2);
    expect(refits[1].frames).toBeGreaterThan(refits[0].frames);
    const b = loadBundle(join(out, 'day1'));
    expect(b.manifest.input.neurons).toBe(120);
    expect(b.manifest.metrics.validation?.calibration_refits).toBe(refits.length);
    expect((b.manifest.training.config.learningCurve as unknown[]).length).toBe(refits.length);
  }, 120_000);
});

describe('stimulus sets', () => {
  it('finds images by id in a folder of <id>.npy files, resized to the decoder', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cc-stim-'));
    writeNpy(join(dir, '7.npy'), Float32Array.from({ length: 24 * 32 }, (_, k) => (k % 32 < 16 ? 0 : 200)), [24, 32]);
    const set = await StimulusSet.open(dir, H, W);
    const img = set.get(7)!;
    expect(img.length).toBe(P);
    // Area resampling by 2: the left half stays 0, the right half 200.
    expect(img[0]).toBe(0);
    expect(img[W - 1]).toBe(200);
    expect(set.get(8)).toBeUndefined();
    await expect(StimulusSet.open(join(dir, 'missing'), H, W)).rejects.toThrow(/CC_ERR_CALIBRATION/);
  });
});

describe('drift simulator', () => {
  it('drifts gains over time and swaps ROIs at the switch, deterministically', () => {
    const ids = Array.from({ length: 50 }, (_, i) => 10 + i);
    const cfg = { gainSdPerHour: 0.5, stepSeconds: 10, switchAt: 600, lostFraction: 0.2, reserveUnits: 10, newIdOffset: 1000, seed: 3 };
    const sim = new DriftSimulator(ids, cfg);
    const population = Float32Array.from({ length: 50 }, (_, i) => 1 + i);
    const early = sim.frame(population, 0);
    // At the start: the 40 visible units, gains 1.
    expect(early.unitIds).toEqual(ids.slice(0, 40));
    expect(Array.from(early.responses)).toEqual(Array.from(population.slice(0, 40)));
    const late = sim.frame(population, 599);
    const logRatios = Array.from(late.responses, (v, k) => Math.log(v / population[k]));
    const sd = Math.sqrt(logRatios.reduce((a, v) => a + v * v, 0) / logRatios.length);
    // Ten minutes of a 0.5-per-hour walk: an sd near 0.5 * sqrt(600 / 3600) = 0.2.
    expect(sd).toBeGreaterThan(0.1);
    expect(sd).toBeLessThan(0.35);
    const after = sim.frame(population, 601);
    expect(after.unitIds.length).toBe(40 - 8 + 10);
    expect(after.unitIds.filter((u) => u >= 1000)).toEqual(ids.slice(40).map((u) => 1000 + u));
    expect(new DriftSimulator(ids, cfg).frame(population, 599).responses).toEqual(late.responses);
  });
});

describe('transferred refiner', () => {
  it('runs on top of a ridge it was not trained with, as ridge image + its correction', async () => {
    const rng = new Rng(11);
    const count = 64;
    const targets = Float32Array.from({ length: count * P }, () => rng.normal());
    const ridgeImages = Float32Array.from(targets, (v) => 0.5 * v + 0.3 * rng.normal());
    const refiner = await trainTransferRefiner({ animals: [{ name: 'a', ridgeImages, targets, count }], height: H, width: W, steps: 30, batch: 16, lr: 3e-3 });
    expect(refiner.steps).toBe(30);
    // A new animal: another neuron count, a ridge the refiner never saw.
    const neurons = 23;
    const weights = Float32Array.from({ length: neurons * P }, () => 0.1 * rng.normal());
    const bias = Float32Array.from({ length: P }, () => 0.1 * rng.normal());
    const composed = composeRidgeRefiner({ weights, bias, neurons }, refiner);
    const held = { count: 5, raw: Float32Array.from({ length: 5 * neurons }, () => rng.next()), images: new Float32Array(5 * P) };
    const unit = new Float32Array(neurons).fill(1);
    const refined = await runGraph(composed, held, unit, H, W);
    const ridgeOnly = await runGraph(buildRidgeGraph(weights, bias, neurons, H, W), held, unit, H, W);
    expect(refined.every(Number.isFinite)).toBe(true);
    // The trained correction is not zero...
    expect(Math.max(...refined.map((v, k) => Math.abs(v - ridgeOnly[k])))).toBeGreaterThan(1e-3);
    // ...and is exactly the refiner applied to this ridge's image.
    const { createSession, runOnce } = await import('../../src/models/ort.js');
    const { tensor } = await import('../../src/models/onnx/index.js');
    const { session } = await createSession(refinerOnlyGraph(refiner));
    const alone = (await runOnce(session, { ridge_image: tensor('float32', [5, 1, H, W], ridgeOnly) })).image.data as Float32Array;
    for (let k = 0; k < alone.length; k++) expect(refined[k]).toBeCloseTo(alone[k], 4);
  }, 120_000);
});

describe('live calibration through a server', () => {
  const token = 'calibration-test-token-0123456789';
  let server: CortexcastServer;
  let modelsDir: string;
  beforeAll(async () => {
    modelsDir = mkdtempSync(join(tmpdir(), 'cc-cal-models-'));
    server = await new CortexcastServer(loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, modelsDir, auth: { token }, framePolicy: 'fifo', shutdownGraceMs: 2000, limits: { minReloadIntervalMs: 200 } } }), () => undefined).start();
  });
  afterAll(async () => {
    await server?.close();
  });

  it('refuses the response feed without the token, and on a server that has none', async () => {
    const { subscribeResponses } = await import('../../src/training/calibrate/server-link.js');
    await expect(subscribeResponses(`http://127.0.0.1:${server.httpPort}`, { token: 'wrong-token-wrong-token', onFrame: () => undefined })).rejects.toThrow(/401/);
    const open = await new CortexcastServer(loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, modelsDir, shutdownGraceMs: 500 } }), () => undefined).start();
    try {
      await expect(subscribeResponses(`http://127.0.0.1:${open.httpPort}`, { token, onFrame: () => undefined })).rejects.toThrow(/403.*needs a server token/);
    } finally {
      await open.close();
    }
  });

  it('the response feed skips frames for a subscriber that stops reading, and tells it how many', async () => {
    const small = await new CortexcastServer(loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, modelsDir, auth: { token }, limits: { maxSubscriberBufferBytes: 1024 }, shutdownGraceMs: 500 } }), () => undefined).start();
    const { subscribeResponses } = await import('../../src/training/calibrate/server-link.js');
    const got: { seq: string; skippedBefore: number }[] = [];
    const feed = await subscribeResponses(`http://127.0.0.1:${small.httpPort}`, { token, onFrame: (f) => got.push({ seq: f.seq, skippedBefore: f.skippedBefore }) });
    const conn = new DecoderConnection(`127.0.0.1:${small.grpcPort}`, { token });
    const stream = conn.openStream();
    const rng = new Rng(20);
    const send = async (from: number, count: number): Promise<void> => {
      for (let i = 0; i < count; i++) {
        // 64 KB stimuli: loopback socket buffers fill within a few dozen frames.
        const pixels = Uint8Array.from({ length: 256 * 256 }, () => 255 * rng.next());
        stream.send({ streamId: 'rig', model: 'nobody', sequence: from + i, responses: new Float32Array(100).fill(1), imageId: from + i, stimulus: { width: 256, height: 256, pixels } });
      }
      await new Promise((r) => setTimeout(r, 300));
    };
    await send(1, 5);
    const before = got.length;
    expect(before).toBe(5);
    const metric = async (re: RegExp): Promise<number> => Number(re.exec(await (await fetch(`http://127.0.0.1:${small.httpPort}/metrics`, { headers: { authorization: `Bearer ${token}` } })).text())?.[1] ?? 0);
    const read = (): Promise<number> => metric(/cortexcast_frames_rejected_total\{reason="unknown_model"\} (\d+)/);
    const until = async (cond: () => Promise<boolean> | boolean): Promise<void> => {
      for (let k = 0; k < 200 && !(await cond()); k++) await new Promise((r) => setTimeout(r, 100));
    };
    // The subscriber stops reading: its socket fills and the server skips it.
    feed.pause();
    await send(6, 200);
    await until(async () => (await read()) >= 205);
    const skipped = await metric(/cortexcast_response_feed_skipped_total (\d+)/);
    expect(skipped).toBeGreaterThan(0);
    feed.resume();
    // What waited in the socket drains; frames after that are sent again.
    let seen = -1;
    await until(async () => {
      const settled = got.length === seen;
      seen = got.length;
      await new Promise((r) => setTimeout(r, 200));
      return settled;
    });
    await send(206, 3);
    const skippedNow = (): Promise<number> => metric(/cortexcast_response_feed_skipped_total (\d+)/);
    await until(async () => (await read()) >= 208 && got.length + (await skippedNow()) >= 208);
    // Every frame was either sent or counted as skipped; the last one sent reports the count.
    const total = await skippedNow();
    expect(got.length + total).toBe(208);
    expect(got[got.length - 1].skippedBefore).toBe(total);
    stream.end();
    feed.close();
    conn.close();
    await small.close();
  });

  it('serves refits while frames flow; every frame gets its final ack; a new unit set becomes a new decoder', async () => {
    const ac = new AbortController();
    const served: ServedRefit[] = [];
    const live = runLiveCalibration({
      name: 'new-mouse',
      modelsDir,
      height: H,
      width: W,
      server: `http://127.0.0.1:${server.httpPort}`,
      grpc: `127.0.0.1:${server.grpcPort}`,
      token,
      everySeconds: 0.3,
      minFrames: 15,
      alphas: [0.3, 3],
      signal: ac.signal,
      onServed: (s) => served.push(s),
      log: () => undefined,
    });
    await new Promise((r) => setTimeout(r, 300));
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`, { token });
    const acks: FrameAck[] = [];
    const stream = conn.openStream((a) => acks.push(a));
    const rng = new Rng(12);
    const pool = images(40, 13);
    const day1 = toyAnimal(18, 14);
    const day2 = toyAnimal(14, 15);
    const ids1 = Array.from({ length: 18 }, (_, i) => i + 1);
    const ids2 = [...ids1.slice(6), 50, 51];
    let seq = 0;
    const send = async (animal: ReturnType<typeof toyAnimal>, unitIds: number[], frames: number): Promise<void> => {
      for (let i = 0; i < frames; i++) {
        const id = 1 + Math.floor(rng.next() * pool.length);
        const image = pool[id - 1];
        stream.send({ streamId: 'rig', model: 'new-mouse', sequence: ++seq, responses: animal.frame(image, rng), unitIds, imageId: id, stimulus: { width: W, height: H, pixels: Uint8Array.from(image) } });
        await new Promise((r) => setTimeout(r, 8));
      }
    };
    const waitFor = async (cond: () => boolean, ms: number): Promise<void> => {
      const end = Date.now() + ms;
      while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
    };
    await send(day1, ids1, 250);
    await waitFor(() => served.some((s) => s.neurons === 18), 20_000);
    await send(day1, ids1, 100);
    // The viewer's learning curve: the server lists the served bundle's refits with their held-out SSIM.
    await waitFor(() => served.filter((s) => s.neurons === 18).length >= 2, 20_000);
    const listed = (await (await fetch(`http://127.0.0.1:${server.httpPort}/api/models`, { headers: { authorization: `Bearer ${token}` } })).json()) as { models: { name: string; learningCurve?: { frames: number; ssim: number }[] }[] };
    const curve = listed.models.find((m) => m.name === 'new-mouse')!.learningCurve!;
    expect(curve.length).toBeGreaterThanOrEqual(2);
    expect(curve[curve.length - 1].frames).toBeGreaterThan(curve[0].frames);
    expect(curve.every((p) => p.ssim > -1 && p.ssim < 1)).toBe(true);
    const day2From = seq + 1;
    await send(day2, ids2, 250);
    await waitFor(() => served.some((s) => s.neurons === 14), 20_000);
    const lastDay2 = seq + 1;
    await send(day2, ids2, 60);
    stream.end();
    await stream.done;
    ac.abort();
    await live;
    conn.close();

    expect(served.filter((s) => s.neurons === 18).length).toBeGreaterThan(0);
    expect(served.filter((s) => s.neurons === 14).length).toBeGreaterThan(0);
    // One final ack per frame.
    expect(acks.length).toBe(seq);
    expect(new Set(acks.map((a) => Number(a.sequence))).size).toBe(seq);
    // Before the first bundle the model is unknown; from the first decode on, no day-1 frame is refused (reloads leave no gap).
    const firstDecoded = Math.min(...acks.filter((a) => a.status === 'DECODED').map((a) => Number(a.sequence)));
    expect(firstDecoded).toBeLessThan(day2From);
    expect(acks.filter((a) => Number(a.sequence) > firstDecoded && Number(a.sequence) < day2From && a.status === 'REJECTED')).toEqual([]);
    // Day 2's frames: refused for the old neuron set until the refit for the new set serves, then decoded.
    expect(acks.filter((a) => Number(a.sequence) >= lastDay2 && a.status === 'DECODED').length).toBeGreaterThan(50);
    expect(loadBundle(join(modelsDir, 'new-mouse')).unitIds).toEqual(ids2);
  }, 120_000);
});
