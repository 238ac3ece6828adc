import { describe, expect, it } from 'vitest';
import { newGraph, readModel, writeModel, tensor, GraphError, type Value } from '../../src/models/onnx/index.js';
import { batchNorm, centerCrop, conv2d, convTranspose2d, elu, leakyRelu, linear, relu, reshape, sigmoid, tanh, type LayerContext } from '../../src/models/layers.js';
import { Rng } from '../../src/models/rng.js';
import { createSession, runOnce } from '../../src/models/ort.js';
import * as ref from '../helpers/reference.js';

async function run(ctx: LayerContext, x: Value, y: Value, data: Float32Array): Promise<Float32Array> {
  ctx.g.output(y, 'y');
  const { session } = await createSession(writeModel(ctx.g), { intraOpThreads: 1 });
  const out = await runOnce(session, { [x.name]: tensor('float32', x.shape as number[], data) });
  return out.y.data as Float32Array;
}

const weights = (ctx: LayerContext, suffix: string): Float32Array => {
  const hit = [...ctx.g.initializers.values()].find((i) => i.value.name.endsWith(suffix));
  if (!hit) throw new Error(`no initializer ${suffix}`);
  return hit.tensor.data as Float32Array;
};

const mk = (seed = 1): LayerContext => ({ g: newGraph('t'), rng: new Rng(seed) });

describe('layers match plain TypeScript references in ONNX Runtime', () => {
  it('linear', async () => {
    const ctx = mk();
    const x = ctx.g.input('x', 'float32', [3, 7]);
    const y = linear(ctx, x, 5);
    const xd = ref.randn(21, 2);
    const got = await run(ctx, x, y, xd);
    const want = ref.matmul(xd, weights(ctx, 'weight'), 3, 7, 5).map((v, i) => v + weights(ctx, 'bias')[i % 5]);
    expect(ref.maxAbsDiff(got, want)).toBeLessThan(1e-5);
  });

  const convCases = [
    { n: 2, cin: 3, h: 9, w: 11, cout: 4, k: 3, stride: 1, pad: 1, dilation: 1, groups: 1 },
    { n: 1, cin: 4, h: 10, w: 7, cout: 6, k: 5, stride: 2, pad: 2, dilation: 1, groups: 2 },
    { n: 1, cin: 3, h: 12, w: 9, cout: 3, k: 3, stride: 1, pad: 0, dilation: 2, groups: 3 },
  ];
  it.each(convCases)('conv2d %o', async (s) => {
    const ctx = mk();
    const x = ctx.g.input('x', 'float32', [s.n, s.cin, s.h, s.w]);
    const y = conv2d(ctx, x, s.cout, { kernel: s.k, stride: s.stride, padding: s.pad, dilation: s.dilation, groups: s.groups });
    const xd = ref.randn(s.n * s.cin * s.h * s.w, 3);
    const got = await run(ctx, x, y, xd);
    const want = ref.conv2d(xd, weights(ctx, 'weight'), weights(ctx, 'bias'), s);
    expect(y.shape).toEqual([s.n, s.cout, want.oh, want.ow]);
    expect(ref.maxAbsDiff(got, want.out)).toBeLessThan(1e-5);
  });

  const convTCases = [
    { n: 2, cin: 3, h: 5, w: 6, cout: 4, k: 7, stride: 2, pad: 2, dilation: 1, groups: 1, outputPadding: 0 },
    { n: 1, cin: 4, h: 4, w: 5, cout: 2, k: 4, stride: 1, pad: 1, dilation: 1, groups: 1, outputPadding: 0 },
    { n: 1, cin: 2, h: 3, w: 4, cout: 2, k: 3, stride: 3, pad: 1, dilation: 1, groups: 2, outputPadding: 1 },
  ];
  it.each(convTCases)('convTranspose2d %o', async (s) => {
    const ctx = mk();
    const x = ctx.g.input('x', 'float32', [s.n, s.cin, s.h, s.w]);
    const y = convTranspose2d(ctx, x, s.cout, { kernel: s.k, stride: s.stride, padding: s.pad, groups: s.groups, outputPadding: s.outputPadding });
    const xd = ref.randn(s.n * s.cin * s.h * s.w, 4);
    const got = await run(ctx, x, y, xd);
    const want = ref.convTranspose2d(xd, weights(ctx, 'weight'), weights(ctx, 'bias'), s);
    expect(y.shape).toEqual([s.n, s.cout, want.oh, want.ow]);
    expect(ref.maxAbsDiff(got, want.out)).toBeLessThan(1e-5);
  });

  it('batchNorm (inference form) uses running statistics', async () => {
    const ctx = mk();
    const x = ctx.g.input('x', 'float32', [2, 3, 2, 2]);
    const y = batchNorm(ctx, x, { eps: 1e-3 });
    const [gamma, beta, mean, variance] = ['weight', 'bias', 'running_mean', 'running_var'].map((s) => weights(ctx, s));
    gamma.set([1.5, -0.5, 2]);
    beta.set([0.1, 0.2, -0.3]);
    mean.set([0.5, -1, 0]);
    variance.set([2, 0.25, 1]);
    const xd = ref.randn(24, 5);
    const got = await run(ctx, x, y, xd);
    const want = Array.from(xd, (v, i) => {
      const c = Math.floor(i / 4) % 3;
      return ((v - mean[c]) / Math.sqrt(variance[c] + 1e-3)) * gamma[c] + beta[c];
    });
    expect(ref.maxAbsDiff(got, want)).toBeLessThan(1e-5);
  });

  const acts: [string, (c: LayerContext, v: Value) => Value, (v: number) => number][] = [
    ['relu', relu, (v) => Math.max(0, v)],
    ['leakyRelu', (c, v) => leakyRelu(c, v, 0.2), (v) => (v > 0 ? v : 0.2 * v)],
    ['elu', elu, (v) => (v > 0 ? v : Math.exp(v) - 1)],
    ['sigmoid', sigmoid, (v) => 1 / (1 + Math.exp(-v))],
    ['tanh', tanh, Math.tanh],
  ];
  it.each(acts)('%s', async (_name, layer, f) => {
    const ctx = mk();
    const x = ctx.g.input('x', 'float32', [4, 5]);
    const xd = ref.randn(20, 6, 2);
    const got = await run(ctx, x, layer(ctx, x), xd);
    expect(ref.maxAbsDiff(got, Array.from(xd, f))).toBeLessThan(1e-6);
  });

  it('reshape and centre crop', async () => {
    const ctx = mk();
    const x = ctx.g.input('x', 'float32', [1, 40 * 68]);
    const y = centerCrop(ctx, reshape(ctx, x, [1, 1, 40, 68]), 36, 64);
    expect(y.shape).toEqual([1, 1, 36, 64]);
    const xd = Float32Array.from({ length: 40 * 68 }, (_, i) => i);
    const got = await run(ctx, x, y, xd);
    expect(got[0]).toBe(2 * 68 + 2);
    expect(got[got.length - 1]).toBe((2 + 35) * 68 + 2 + 63);
  });
});

describe('graph builder', () => {
  it('names the layer and shapes when sizes do not fit', () => {
    const ctx = mk();
    const x = ctx.g.input('x', 'float32', ['batch', 3, 8, 8]);
    expect(() => ctx.g.scope('core', () => conv2d(ctx, x, 4, { kernel: 9 }))).toThrow(/core\/conv\/Conv \(Conv\): spatial size 8 is too small for kernel 9/);
    const y = ctx.g.input('y', 'float32', ['batch', 5]);
    const err = (() => {
      try {
        ctx.g.scope('readin', () => ctx.g.op('MatMul', [y, ctx.g.initializer('w', tensor('float32', [4, 2]))]));
      } catch (e) {
        return e as Error;
      }
    })();
    expect(err).toBeInstanceOf(GraphError);
    expect(err?.message).toMatch(/readin\/MatMul.*inner dimensions differ \(5 vs 4\).*y: float32\[batch,5\]/);
  });

  it('infers the -1 of a reshape over a symbolic batch as what it is, not always the batch', () => {
    const g = newGraph('t');
    const x = g.input('x', 'float32', ['batch', 8]);
    const shape = (v: number[]) => g.initializer('s', tensor('int64', [v.length], v));
    // ORT sizes buffers by these names: [batch, 8] -> [-1, 1] has batch*8 rows, not batch.
    const rows = g.op('Reshape', [x, shape([-1, 1])]);
    expect(rows.shape).toEqual(['batch*8', 1]);
    expect(g.op('Reshape', [x, shape([-1, 2, 4])]).shape).toEqual(['batch', 2, 4]);
    expect(g.op('Reshape', [g.op('MatMul', [rows, g.initializer('w', tensor('float32', [1, 6]))]), shape([-1, 8, 2, 3])]).shape).toEqual(['batch', 8, 2, 3]);
    expect(g.op('Reshape', [g.input('q', 'float32', ['batch', 3, 4, 5]), shape([0, 3, -1])]).shape).toEqual(['batch', 3, 20]);
  });

  it('keeps the symbolic batch dimension through layers', () => {
    const ctx = mk();
    const x = ctx.g.input('x', 'float32', ['batch', 10]);
    const h = reshape(ctx, linear(ctx, x, 2 * 4 * 6), [-1, 2, 4, 6]);
    expect(h.shape).toEqual(['batch', 2, 4, 6]);
    expect(convTranspose2d(ctx, h, 3, { kernel: 4, stride: 2, padding: 1 }).shape).toEqual(['batch', 3, 8, 12]);
  });

  it('refuses unknown ops, unknown attributes and duplicate names', () => {
    const ctx = mk();
    const x = ctx.g.input('x', 'float32', [2]);
    expect(() => ctx.g.op('Frobnicate', [x])).toThrow(/no schema/);
    expect(() => ctx.g.op('Relu', [x], { alpha: 1 })).toThrow(/unknown attribute 'alpha'/);
    expect(() => ctx.g.input('x', 'float32', [2])).toThrow(/defined twice/);
  });
});

describe('ONNX writer and reader', () => {
  it('round-trips a model and the re-written bytes load and compute the same', async () => {
    const ctx = mk(7);
    const x = ctx.g.input('x', 'float32', ['batch', 1, 6, 6]);
    let h = conv2d(ctx, x, 2, { kernel: 3, padding: 1 });
    h = batchNorm(ctx, h);
    h = leakyRelu(ctx, h, 0.1);
    ctx.g.output(h, 'y');
    const bytes = writeModel(ctx.g, { metadata: { kind: 'test' } });
    const back = readModel(bytes);
    expect(back.metadata).toEqual({ kind: 'test' });
    expect(back.graph.nodes.map((n) => n.opType)).toEqual(['Conv', 'BatchNormalization', 'LeakyRelu', 'Identity']);
    expect(back.graph.inputs[0].shape).toEqual(['batch', 1, 6, 6]);
    const again = writeModel(back.graph, { metadata: { kind: 'test' } });
    expect(Buffer.from(again).equals(Buffer.from(bytes))).toBe(true);
    const xd = ref.randn(36 * 2, 8);
    const a = await runOnce((await createSession(bytes)).session, { x: tensor('float32', [2, 1, 6, 6], xd) });
    const b = await runOnce((await createSession(again)).session, { x: tensor('float32', [2, 1, 6, 6], xd) });
    expect(Array.from(a.y.data as Float32Array)).toEqual(Array.from(b.y.data as Float32Array));
  });

  it('rejects bytes that are not a model', () => {
    expect(() => readModel(new Uint8Array([0xff, 0xff, 0xff, 0x01, 0x02]))).toThrow(/not a readable ONNX model/);
  });
});
