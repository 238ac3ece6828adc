import { type Graph, type Value, GraphError, fmtShape } from './onnx/graph.js';
import { tensor, type TensorData } from './onnx/tensor.js';
import type { Rng } from './rng.js';

/**
 * Layers as functions over the graph builder. Each creates its weights as named initializers under
 * its own scope (so `readin/linear/weight` says where a weight lives) with PyTorch's default init,
 * and shape-checks through the builder.
 */
export interface LayerContext {
  readonly g: Graph;
  readonly rng: Rng;
}

const uniformTensor = (rng: Rng, dims: number[], bound: number): TensorData => {
  const t = tensor('float32', dims);
  const d = t.data as Float32Array;
  for (let i = 0; i < d.length; i++) d[i] = rng.uniform(-bound, bound);
  return t;
};

const constTensor = (dims: number[], v: number): TensorData => {
  const t = tensor('float32', dims);
  (t.data as Float32Array).fill(v);
  return t;
};

export const int64s = (g: Graph, name: string, values: readonly number[]): Value =>
  g.initializer(name, tensor('int64', [values.length], values));

export const scalar = (g: Graph, name: string, v: number, dtype: 'float32' | 'float64' = 'float32'): Value =>
  g.initializer(name, tensor(dtype, [], [v]));

function fixedDim(x: Value, axis: number, layer: string): number {
  const d = x.shape[axis];
  if (typeof d !== 'number') throw new GraphError(`${layer}: axis ${axis} of ${x.name} ${fmtShape(x.shape)} must be fixed`);
  return d;
}

/** y = x W + b with W stored [in, out]. x: [..., in]. */
export function linear(ctx: LayerContext, x: Value, outFeatures: number, opts: { bias?: boolean; name?: string } = {}): Value {
  const { g, rng } = ctx;
  return g.scope(opts.name ?? 'linear', () => {
    const inF = fixedDim(x, x.shape.length - 1, `${g.currentScope}`);
    const bound = 1 / Math.sqrt(inF);
    const w = g.initializer('weight', uniformTensor(rng, [inF, outFeatures], bound));
    let y = g.op('MatMul', [x, w]);
    if (opts.bias ?? true) y = g.op('Add', [y, g.initializer('bias', uniformTensor(rng, [outFeatures], bound))]);
    return y;
  });
}

export interface Conv2dOptions {
  kernel: number;
  stride?: number;
  padding?: number | [number, number, number, number];
  dilation?: number;
  groups?: number;
  bias?: boolean;
  name?: string;
}

const padsOf = (p: Conv2dOptions['padding']): number[] => (Array.isArray(p) ? [...p] : [p ?? 0, p ?? 0, p ?? 0, p ?? 0]);

/** 2-D convolution, NCHW; weight [out, in/groups, k, k]. */
export function conv2d(ctx: LayerContext, x: Value, outChannels: number, o: Conv2dOptions): Value {
  const { g, rng } = ctx;
  return g.scope(o.name ?? 'conv', () => {
    const cin = fixedDim(x, 1, g.currentScope);
    const groups = o.groups ?? 1;
    if (cin % groups || outChannels % groups) throw new GraphError(`${g.currentScope}: channels ${cin}->${outChannels} not divisible by groups ${groups}`);
    const fanIn = (cin / groups) * o.kernel * o.kernel;
    const bound = 1 / Math.sqrt(fanIn);
    const w = g.initializer('weight', uniformTensor(rng, [outChannels, cin / groups, o.kernel, o.kernel], bound));
    const b = o.bias ?? true ? g.initializer('bias', uniformTensor(rng, [outChannels], bound)) : undefined;
    const s = o.stride ?? 1;
    const d = o.dilation ?? 1;
    return g.op('Conv', [x, w, b], { kernel_shape: [o.kernel, o.kernel], strides: [s, s], pads: padsOf(o.padding), dilations: [d, d], group: groups });
  });
}

/** 2-D transposed convolution, NCHW; weight [in, out/groups, k, k] (PyTorch layout). */
export function convTranspose2d(ctx: LayerContext, x: Value, outChannels: number, o: Conv2dOptions & { outputPadding?: number }): Value {
  const { g, rng } = ctx;
  return g.scope(o.name ?? 'convT', () => {
    const cin = fixedDim(x, 1, g.currentScope);
    const groups = o.groups ?? 1;
    // PyTorch computes fan_in of a transposed conv from weight dim 1: (out/groups) * k * k.
    const bound = 1 / Math.sqrt((outChannels / groups) * o.kernel * o.kernel);
    const w = g.initializer('weight', uniformTensor(rng, [cin, outChannels / groups, o.kernel, o.kernel], bound));
    const b = o.bias ?? true ? g.initializer('bias', uniformTensor(rng, [outChannels], bound)) : undefined;
    const s = o.stride ?? 1;
    const d = o.dilation ?? 1;
    const op = o.outputPadding ?? 0;
    return g.op('ConvTranspose', [x, w, b], {
      kernel_shape: [o.kernel, o.kernel],
      strides: [s, s],
      pads: padsOf(o.padding),
      dilations: [d, d],
      group: groups,
      output_padding: [op, op],
    });
  });
}

/** Batch norm in inference form (running statistics), over axis 1 of [N, C, ...] or [N, C]. */
export function batchNorm(ctx: LayerContext, x: Value, opts: { eps?: number; name?: string } = {}): Value {
  const { g } = ctx;
  return g.scope(opts.name ?? 'bn', () => {
    const c = fixedDim(x, 1, g.currentScope);
    const scale = g.initializer('weight', constTensor([c], 1));
    const bias = g.initializer('bias', constTensor([c], 0));
    const mean = g.initializer('running_mean', constTensor([c], 0));
    const variance = g.initializer('running_var', constTensor([c], 1));
    return g.op('BatchNormalization', [x, scale, bias, mean, variance], { epsilon: opts.eps ?? 1e-5 });
  });
}

export const relu = (ctx: LayerContext, x: Value): Value => ctx.g.op('Relu', [x]);
export const leakyRelu = (ctx: LayerContext, x: Value, alpha = 0.01): Value => ctx.g.op('LeakyRelu', [x], { alpha });
export const elu = (ctx: LayerContext, x: Value, alpha = 1): Value => ctx.g.op('Elu', [x], { alpha });
export const sigmoid = (ctx: LayerContext, x: Value): Value => ctx.g.op('Sigmoid', [x]);
export const tanh = (ctx: LayerContext, x: Value): Value => ctx.g.op('Tanh', [x]);

export function reshape(ctx: LayerContext, x: Value, shape: readonly number[]): Value {
  const { g } = ctx;
  return g.op('Reshape', [x, int64s(g, 'shape', shape)]);
}

export type ReduceOp = 'ReduceMean' | 'ReduceSum' | 'ReduceSumSquare' | 'ReduceMax' | 'ReduceMin';

/** A reduction over `axes`, in the form opset 17 wants (input for ReduceSum, attribute otherwise). */
export function reduce(ctx: LayerContext, op: ReduceOp, x: Value, axes: readonly number[], keepdims = true): Value {
  const { g } = ctx;
  if (op === 'ReduceSum') return g.op(op, [x, int64s(g, 'axes', axes)], { keepdims: keepdims ? 1 : 0 });
  return g.op(op, [x], { axes: [...axes], keepdims: keepdims ? 1 : 0 });
}

/** Crop [..., H, W] to rows [top, top+h) and columns [left, left+w). */
export function crop(ctx: LayerContext, x: Value, top: number, left: number, h: number, w: number): Value {
  const { g } = ctx;
  const r = x.shape.length;
  const H = fixedDim(x, r - 2, 'crop');
  const W = fixedDim(x, r - 1, 'crop');
  if (top < 0 || left < 0 || top + h > H || left + w > W) throw new GraphError(`crop ${h}x${w} at (${top},${left}) exceeds ${H}x${W} of ${x.name}`);
  return g.op('Slice', [x, int64s(g, 'starts', [top, left]), int64s(g, 'ends', [top + h, left + w]), int64s(g, 'axes', [r - 2, r - 1])]);
}

/** Centre crop of the last two axes, as the report crops the CNN's 40x68 output to 36x64. */
export function centerCrop(ctx: LayerContext, x: Value, h: number, w: number): Value {
  const r = x.shape.length;
  const H = fixedDim(x, r - 2, 'centerCrop');
  const W = fixedDim(x, r - 1, 'centerCrop');
  return crop(ctx, x, Math.floor((H - h) / 2), Math.floor((W - w) / 2), h, w);
}
