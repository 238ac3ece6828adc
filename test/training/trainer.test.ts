import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { batchNorm, conv2d, dropout, linear, relu, type LayerContext } from '../../src/models/layers.js';
import { newGraph, tensor, writeModel, type TensorData } from '../../src/models/onnx/index.js';
import { createSession, runOnce } from '../../src/models/ort.js';
import { Rng } from '../../src/models/rng.js';
import { logSsimLoss, maeLoss, mseLoss, poissonLoss, ssimValue } from '../../src/training/engine/losses.js';
import { ssimMinMax, logSsimLoss as logSsimNumber } from '../../src/training/eval/metrics/image-metrics.js';
import { TrainingSession, type ModelBuilder, type TrainingSpec } from '../../src/training/engine/trainer.js';
import { ReduceOnPlateau, cosineLr } from '../../src/training/engine/schedule.js';
import { randn } from '../helpers/reference.js';
import { fixturesDir } from '../helpers/paths.js';

const f32 = (dims: number[], data: ArrayLike<number>): TensorData => tensor('float32', dims, Float32Array.from(data));

/** A small CNN: conv3 -> BN -> ReLU -> dropout2d -> conv3. Input and output [B, 1, 8, 8]. */
const smallCnn =
  (p = 0): ModelBuilder =>
  (ctx, batch) => {
    const x = ctx.g.input('x', 'float32', [batch, 1, 8, 8]);
    let h = conv2d(ctx, x, 6, { kernel: 3, padding: 1, name: 'c1' });
    h = batchNorm(ctx, h, { name: 'bn1' });
    h = relu(ctx, h);
    h = dropout(ctx, h, p, { channelwise: true, name: 'drop' });
    return { inputs: [x], output: conv2d(ctx, h, 1, { kernel: 3, padding: 1, name: 'c2' }) };
  };

const mseObjective: TrainingSpec['objective'] = (ctx, out) => {
  const y = ctx.g.input('y', 'float32', out.shape);
  return { targets: [y], loss: mseLoss(ctx, out, y), metrics: { mae: maeLoss(ctx, out, y) } };
};

/** Targets from a fixed random "teacher" (a different seed of the same architecture, eval mode). */
async function teacherData(n: number): Promise<{ x: TensorData; y: TensorData }> {
  const g = newGraph('teacher');
  const ctx: LayerContext = { g, rng: new Rng(123) };
  const { output } = smallCnn()(ctx, n);
  g.output(output, 'out');
  const x = f32([n, 1, 8, 8], randn(n * 64, 5));
  const { session } = await createSession(g);
  return { x, y: (await runOnce(session, { x })).out };
}

describe('training engine', () => {
  it('a small CNN fits a toy regression to near-zero loss', async () => {
    const { x, y } = await teacherData(8);
    const s = await TrainingSession.create({ name: 'toy', batch: 8, seed: 1, model: smallCnn(), objective: mseObjective, groups: [{ match: '', lr: 1e-2 }] });
    const first = (await s.trainStep({ x, y })).loss;
    let last = first;
    for (let i = 0; i < 400; i++) last = (await s.trainStep({ x, y })).loss;
    expect(last).toBeLessThan(first * 0.01);
    expect(s.parameterCount).toBe(6 * 9 + 6 + 6 + 6 + 6 * 9 + 1);
  });

  it('optimises an image through a frozen network (input gradients)', async () => {
    const net: ModelBuilder = (ctx, batch) => {
      const x = ctx.g.input('x', 'float32', [batch, 1, 8, 8]);
      const h = ctx.g.op('Tanh', [conv2d(ctx, x, 4, { kernel: 3, padding: 1, name: 'c1' })]);
      return { inputs: [x], output: conv2d(ctx, h, 1, { kernel: 3, padding: 1, name: 'c2' }) };
    };
    const spec: TrainingSpec = { name: 'invert', batch: 1, seed: 2, model: net, objective: mseObjective, groups: [{ match: '', lr: 0, frozen: true }], inputGradients: ['x'] };
    const s = await TrainingSession.create(spec);
    expect(s.parameterNames).toHaveLength(0);
    // A target the network can produce: its response to a hidden image.
    const target = await s.evaluate({ x: f32([1, 1, 8, 8], randn(64, 77)) });
    const img = new Float32Array(64);
    const first = (await s.trainStep({ x: f32([1, 1, 8, 8], img), y: target })).loss;
    let loss = first;
    for (let i = 0; i < 300; i++) {
      const r = await s.trainStep({ x: f32([1, 1, 8, 8], img), y: target });
      loss = r.loss;
      for (let k = 0; k < img.length; k++) img[k] -= 40 * r.inputGradients.x[k];
    }
    expect(loss).toBeLessThan(first * 0.02);
  });

  it('same seed, same losses (dropout and batch norm included); another seed differs', async () => {
    const { x, y } = await teacherData(4);
    const run = async (seed: number): Promise<number[]> => {
      const s = await TrainingSession.create({ name: 'det', batch: 4, seed, model: smallCnn(0.3), objective: mseObjective });
      const out: number[] = [];
      for (let i = 0; i < 5; i++) out.push((await s.trainStep({ x, y })).loss);
      return out;
    };
    const a = await run(3);
    expect(await run(3)).toEqual(a);
    expect(await run(4)).not.toEqual(a);
  });

  it('exported ONNX gives the same outputs as the eval pass, and eval mode drops dropout and uses running stats', async () => {
    const { x, y } = await teacherData(4);
    const s = await TrainingSession.create({ name: 'exp', batch: 4, seed: 5, model: smallCnn(0.5), objective: mseObjective });
    for (let i = 0; i < 10; i++) await s.trainStep({ x, y });
    const evalOut = await s.evaluate({ x });
    const graph = s.exportGraph();
    expect(graph.nodes.some((n) => n.opType === 'BatchNormalization')).toBe(true);
    expect(graph.nodes.some((n) => n.opType === 'Sin')).toBe(false);
    expect(graph.inputs.map((v) => v.name)).toEqual(['x']);
    expect(graph.inputs[0].shape[0]).toBe('batch');
    const { session } = await createSession(writeModel(graph));
    const exported = (await runOnce(session, { x })).output;
    const a = evalOut.data as Float32Array;
    const b = exported.data as Float32Array;
    for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThan(1e-6);
    // Any batch size works after export.
    const one = await runOnce(session, { x: f32([1, 1, 8, 8], (x.data as Float32Array).subarray(0, 64)) });
    for (let i = 0; i < 64; i++) expect(Math.abs((one.output.data as Float32Array)[i] - a[i])).toBeLessThan(1e-5);
  });

  it('checkpoints resume exactly (parameters, optimizer state, step, seed)', async () => {
    const { x, y } = await teacherData(4);
    const spec: TrainingSpec = { name: 'ckpt', batch: 4, seed: 6, model: smallCnn(0.2), objective: mseObjective };
    const a = await TrainingSession.create(spec);
    for (let i = 0; i < 3; i++) await a.trainStep({ x, y });
    const dir = mkdtempSync(join(tmpdir(), 'cc-ckpt-'));
    a.saveCheckpoint(dir, { epoch: 1 });
    const cont = [(await a.trainStep({ x, y })).loss, (await a.trainStep({ x, y })).loss];
    const b = await TrainingSession.create(spec);
    expect(b.loadCheckpoint(dir)).toEqual({ epoch: 1 });
    expect(b.step).toBe(3);
    const resumed = [(await b.trainStep({ x, y })).loss, (await b.trainStep({ x, y })).loss];
    expect(resumed).toEqual(cont);
    const meta = JSON.parse(readFileSync(join(dir, 'checkpoint.json'), 'utf8'));
    expect(Object.keys(meta.tensors).some((k: string) => k.endsWith('::adam_v'))).toBe(true);
    await expect(TrainingSession.create({ ...spec, seed: 7 }).then((c) => c.loadCheckpoint(dir))).rejects.toThrow(/^CC_ERR_CHECKPOINT: .*seed 6 differs/);
    // A hand-edited or cut checkpoint.json fails on load with the file and the field named.
    writeFileSync(join(dir, 'checkpoint.json'), JSON.stringify({ ...meta, step: 'three' }));
    expect(() => b.loadCheckpoint(dir)).toThrow(/^CC_ERR_CHECKPOINT: checkpoint .*checkpoint\.json: step: Expected number, received string/);
    writeFileSync(join(dir, 'checkpoint.json'), '{"format": "cortexcast-checkpoint", ');
    expect(() => b.loadCheckpoint(dir)).toThrow(/^CC_ERR_CHECKPOINT: .*is not valid JSON/);
    writeFileSync(join(dir, 'checkpoint.json'), JSON.stringify({ ...meta, format: 'other' }));
    expect(() => b.loadCheckpoint(dir)).toThrow(/format: Invalid literal value/);
  });

  it.each(['adamw', 'sgd'] as const)('host-side updates of large parameters (%s) follow the in-graph optimizer', async (kind) => {
    const { x, y } = await teacherData(4);
    // hostGradChunkElements 7: every gradient leaves the graph in uneven 7-element chunks.
    const run = async (hostUpdateMinElements: number, hostGradChunkElements?: number): Promise<number[]> => {
      const spec: TrainingSpec = {
        name: 'host',
        batch: 4,
        seed: 11,
        model: smallCnn(0.2),
        objective: mseObjective,
        optimizer: { kind },
        groups: [{ match: 'c1/', lr: 1e-2, weightDecay: 0.1, clamp: 0.05 }, { match: '', lr: 3e-3 }],
        hostUpdateMinElements,
        hostGradChunkElements,
      };
      const s = await TrainingSession.create(spec);
      const out: number[] = [];
      for (let i = 0; i < 6; i++) out.push((await s.trainStep({ x, y })).loss);
      if (hostUpdateMinElements === 1) {
        const dir = mkdtempSync(join(tmpdir(), 'cc-host-'));
        s.saveCheckpoint(dir);
        const next = (await s.trainStep({ x, y })).loss;
        const r = await TrainingSession.create(spec);
        r.loadCheckpoint(dir);
        expect((await r.trainStep({ x, y })).loss).toBe(next);
      }
      return out;
    };
    const graph = await run(Infinity);
    const host = await run(1);
    const chunked = await run(1, 7);
    host.forEach((l, i) => expect(Math.abs(l - graph[i])).toBeLessThan(1e-5 * Math.max(1, Math.abs(graph[i]))));
    chunked.forEach((l, i) => expect(l).toBe(host[i]));
  });

  it('AdamW step matches the hand-computed update; groups set lr, weight decay, clamp and freezing', async () => {
    const model: ModelBuilder = (ctx, batch) => {
      const x = ctx.g.input('x', 'float32', [batch, 2]);
      const h = linear(ctx, x, 1, { name: 'a' });
      return { inputs: [x], output: linear(ctx, h, 1, { name: 'b', bias: false }) };
    };
    const spec: TrainingSpec = {
      name: 'adam',
      batch: 1,
      seed: 8,
      model,
      objective: mseObjective,
      groups: [
        { match: 'a/', lr: 0.1, weightDecay: 0.5, clamp: 1e-3 },
        { match: 'b/', lr: 0.1, frozen: true },
      ],
    };
    const s = await TrainingSession.create(spec);
    expect(s.parameterNames).toEqual(['a/weight', 'a/bias']);
    const before = s.modelTensors().get('a/bias')!.data[0] as number;
    await s.trainStep({ x: f32([1, 2], [1, 2]), y: f32([1, 1], [100]) });
    const after = s.modelTensors().get('a/bias')!.data[0] as number;
    // First Adam step with a clamped gradient g: m/(1-b1) = g, v/(1-b2) = g^2 -> update = sign(g) (eps negligible).
    // The prediction is far below 100, so the gradient on the bias is negative: bias rises by lr.
    const expected = before * (1 - 0.1 * 0.5) + 0.1 * (1e-3 / (1e-3 + 1e-8));
    expect(after).toBeCloseTo(expected, 5);
  });

  it('batch norm running statistics follow PyTorch (momentum 0.1, unbiased variance)', async () => {
    const model: ModelBuilder = (ctx, batch) => {
      const x = ctx.g.input('x', 'float32', [batch, 2]);
      return { inputs: [x], output: batchNorm(ctx, x, { name: 'bn' }) };
    };
    const s = await TrainingSession.create({ name: 'bn', batch: 4, seed: 9, model, objective: mseObjective, groups: [{ match: '', lr: 0 }] });
    const xs = [1, 10, 2, 20, 3, 30, 6, 60];
    await s.trainStep({ x: f32([4, 2], xs), y: f32([4, 2], new Array(8).fill(0)) });
    const t = s.modelTensors();
    const c0 = [1, 2, 3, 6];
    const mean = c0.reduce((a, b) => a + b) / 4;
    const unbiased = c0.reduce((a, b) => a + (b - mean) ** 2, 0) / 3;
    expect(t.get('bn/running_mean')!.data[0]).toBeCloseTo(0.1 * mean, 5);
    expect(t.get('bn/running_var')!.data[0]).toBeCloseTo(0.9 + 0.1 * unbiased, 5);
  });

  it('dropout keeps ~(1-p) of units, rescales them, and draws a new mask each step', async () => {
    const model: ModelBuilder = (ctx, batch) => {
      const x = ctx.g.input('x', 'float32', [batch, 1000]);
      return { inputs: [x], output: dropout(ctx, x, 0.3) };
    };
    const spec: TrainingSpec = { name: 'drop', batch: 2, seed: 10, model, objective: (ctx, out) => {
      const y = ctx.g.input('y', 'float32', out.shape);
      return { targets: [y], loss: mseLoss(ctx, out, y), metrics: { kept: ctx.g.op('ReduceMean', [ctx.g.op('Cast', [ctx.g.op('Greater', [out, y])], { to: 1 })], { keepdims: 0 }), sum: ctx.g.op('ReduceSum', [out], { keepdims: 0 }) } };
    }, groups: [{ match: '', lr: 0 }] };
    const s = await TrainingSession.create(spec);
    const ones = f32([2, 1000], new Array(2000).fill(1));
    const zeros = f32([2, 1000], new Array(2000).fill(0));
    const a = await s.trainStep({ x: ones, y: zeros });
    const b = await s.trainStep({ x: ones, y: zeros });
    expect(a.metrics.kept).toBeGreaterThan(0.65);
    expect(a.metrics.kept).toBeLessThan(0.75);
    expect(a.metrics.sum / 2000).toBeCloseTo(a.metrics.kept / 0.7, 4);
    expect(a.metrics.sum).not.toBe(b.metrics.sum);
    const evalOut = await s.evaluate({ x: ones });
    expect(Array.from(evalOut.data as Float32Array).every((v) => v === 1)).toBe(true);
  });

  it('dropout masks look independent: per channel, between neighbours, images, layers and seeds', async () => {
    const [N, C, H, W] = [4, 32, 16, 16];
    const g = newGraph('masks');
    const ctx: LayerContext = { g, rng: new Rng(1), mode: 'train', dropoutSeed: g.input('seed', 'float64', []) };
    const x = g.input('x', 'float32', [N, C, H, W]);
    g.output(dropout(ctx, x, 0.5, { name: 'a' }), 'a');
    g.output(dropout(ctx, x, 0.5, { name: 'b' }), 'b');
    g.output(dropout(ctx, x, 0.5, { channelwise: true, name: 'c' }), 'c');
    const { session } = await createSession(g, { intraOpThreads: 1 });
    const ones = f32([N, C, H, W], new Array(N * C * H * W).fill(1));
    const run = async (seed: number) => {
      const out = await runOnce(session, { x: ones, seed: tensor('float64', [], [seed]) });
      return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Array.from(v.data as Float32Array, (u) => (u > 0 ? 1 : 0))]));
    };
    const s1 = await run(7919.5);
    const s2 = await run(7920.5);
    const mean = (v: number[]): number => v.reduce((a, b) => a + b, 0) / v.length;
    /** Correlation of mask values at index i and at i + offset, over all i where both exist. */
    const corr = (a: number[], b: number[]): number => {
      const ma = mean(a), mb = mean(b);
      let sab = 0, saa = 0, sbb = 0;
      for (let i = 0; i < a.length; i++) { sab += (a[i] - ma) * (b[i] - mb); saa += (a[i] - ma) ** 2; sbb += (b[i] - mb) ** 2; }
      return sab / Math.sqrt(saa * sbb);
    };
    const shifted = (m: number[], offset: number): [number[], number[]] => [m.slice(0, m.length - offset), m.slice(offset)];
    const m = s1.a;
    expect(Math.abs(mean(m) - 0.5)).toBeLessThan(0.02);
    for (let nc = 0; nc < N * C; nc++) expect(Math.abs(mean(m.slice(nc * H * W, (nc + 1) * H * W)) - 0.5)).toBeLessThan(0.15);
    // sd of a correlation over ~32k pairs is ~0.006
    for (const offset of [1, W, H * W, C * H * W]) expect(Math.abs(corr(...shifted(m, offset)))).toBeLessThan(0.03);
    expect(Math.abs(corr(s1.a, s1.b))).toBeLessThan(0.03);
    expect(Math.abs(corr(s1.a, s2.a))).toBeLessThan(0.03);
    // dropout2d: one value per channel, about half kept
    const channels = Array.from({ length: N * C }, (_, nc) => s1.c.slice(nc * H * W, (nc + 1) * H * W));
    expect(channels.every((ch) => ch.every((v) => v === ch[0]))).toBe(true);
    expect(Math.abs(mean(channels.map((ch) => ch[0])) - 0.5)).toBeLessThan(0.15);
  });
});

describe('graph losses', () => {
  const fixture = JSON.parse(readFileSync(join(fixturesDir, 'ssim-reference.json'), 'utf8')) as { cases: { name: string; height: number; width: number; x: number[]; y: number[]; ssim_after_minmax: number }[] };

  it('SSIM and log-SSIM graphs match the metric (and scikit-image) on the fixture pairs', async () => {
    for (const c of fixture.cases.filter((k) => k.height === 36)) {
      const g = newGraph('ssim');
      const ctx: LayerContext = { g, rng: new Rng(1) };
      const a = g.input('a', 'float32', [1, 1, c.height, c.width]);
      const b = g.input('b', 'float32', [1, 1, c.height, c.width]);
      g.output(ssimValue(ctx, a, b), 'ssim');
      g.output(logSsimLoss(ctx, a, b), 'logssim');
      const { session } = await createSession(g);
      const out = await runOnce(session, { a: f32([1, 1, c.height, c.width], c.x), b: f32([1, 1, c.height, c.width], c.y) });
      expect(Math.abs(Number(out.ssim.data[0]) - c.ssim_after_minmax)).toBeLessThan(2e-4);
      expect(Math.abs(Number(out.logssim.data[0]) - logSsimNumber(ssimMinMax(c.x, c.y, c.height, c.width)))).toBeLessThan(5e-4);
    }
  });

  it('MSE, MAE and Poisson NLL have their textbook values', async () => {
    const g = newGraph('l');
    const ctx: LayerContext = { g, rng: new Rng(1) };
    const p = g.input('p', 'float32', [4]);
    const t = g.input('t', 'float32', [4]);
    g.output(mseLoss(ctx, p, t), 'mse');
    g.output(maeLoss(ctx, p, t), 'mae');
    g.output(poissonLoss(ctx, p, t), 'poisson');
    const { session } = await createSession(g);
    const pv = [0.5, 1, 2, 4];
    const tv = [1, 0, 2, 3];
    const out = await runOnce(session, { p: f32([4], pv), t: f32([4], tv) });
    expect(Number(out.mse.data[0])).toBeCloseTo(pv.reduce((s, v, i) => s + (v - tv[i]) ** 2, 0) / 4, 5);
    expect(Number(out.mae.data[0])).toBeCloseTo(pv.reduce((s, v, i) => s + Math.abs(v - tv[i]), 0) / 4, 5);
    expect(Number(out.poisson.data[0])).toBeCloseTo(pv.reduce((s, v, i) => s + v - tv[i] * Math.log(v + 1e-8), 0) / 4, 5);
  });
});

describe('learning-rate schedules', () => {
  it('cosine decays to its floor; plateau cuts the rate after patience', () => {
    const c = cosineLr(100, 0.1);
    expect(c.factor(0)).toBeCloseTo(1);
    expect(c.factor(50)).toBeCloseTo(0.55);
    expect(c.factor(100)).toBeCloseTo(0.1);
    const p = new ReduceOnPlateau({ mode: 'max', patience: 2, decay: 0.5 });
    for (const m of [0.5, 0.6, 0.59, 0.58, 0.57]) p.report(m);
    expect(p.factor()).toBe(0.5);
  });
});

