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
  /** 'train': batch-statistics batch norm and dropout masks; 'eval' (default): their inference forms. */
  readonly mode?: 'train' | 'eval';
  /** Training graphs: scalar float64 input that seeds every dropout mask of a step. */
  readonly dropoutSeed?: Value;
  /** Names of trainable initializers, in creation order (layers append). */
  readonly params?: string[];
  /** Non-trainable state (running statistics) and, in training, its per-step update. */
  readonly state?: Map<string, Value | undefined>;
}

const isTraining = (ctx: LayerContext): boolean => ctx.mode === 'train';

/** A trainable weight: registered so training graphs feed and update it. */
export function param(ctx: LayerContext, name: string, t: TensorData): Value {
  const v = ctx.g.initializer(name, t);
  ctx.params?.push(v.name);
  return v;
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

export function fixedDim(x: Value, axis: number, layer: string): number {
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
    const w = param(ctx, 'weight', uniformTensor(rng, [inF, outFeatures], bound));
    let y = g.op('MatMul', [x, w]);
    if (opts.bias ?? true) y = g.op('Add', [y, param(ctx, 'bias', uniformTensor(rng, [outFeatures], bound))]);
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
    const w = param(ctx, 'weight', uniformTensor(rng, [outChannels, cin / groups, o.kernel, o.kernel], bound));
    const b = o.bias ?? true ? param(ctx, 'bias', uniformTensor(rng, [outChannels], bound)) : undefined;
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
    const w = param(ctx, 'weight', uniformTensor(rng, [cin, outChannels / groups, o.kernel, o.kernel], bound));
    const b = o.bias ?? true ? param(ctx, 'bias', uniformTensor(rng, [outChannels], bound)) : undefined;
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

/**
 * Batch norm over axis 1 of [N, C, ...] or [N, C]. Eval: the ONNX op with running statistics.
 * Train: normalise with the batch's mean and (biased) variance, built from primitive ops so autodiff
 * differentiates through them, and record the running-statistic updates PyTorch makes
 * (momentum 0.1, unbiased variance) in ctx.state.
 */
export function batchNorm(ctx: LayerContext, x: Value, opts: { eps?: number; momentum?: number; name?: string } = {}): Value {
  const { g } = ctx;
  const eps = opts.eps ?? 1e-5;
  return g.scope(opts.name ?? 'bn', () => {
    const c = fixedDim(x, 1, g.currentScope);
    const scale = param(ctx, 'weight', constTensor([c], 1));
    const bias = param(ctx, 'bias', constTensor([c], 0));
    const mean = g.initializer('running_mean', constTensor([c], 0));
    const variance = g.initializer('running_var', constTensor([c], 1));
    ctx.state?.set(mean.name, undefined);
    ctx.state?.set(variance.name, undefined);
    if (!isTraining(ctx)) return g.op('BatchNormalization', [x, scale, bias, mean, variance], { epsilon: eps });
    const axes = [0, ...x.shape.slice(2).map((_, i) => i + 2)];
    const count = axes.reduce((n, a) => n * fixedDim(x, a, `${g.currentScope} (training needs a fixed batch)`), 1);
    const bshape = [1, c, ...x.shape.slice(2).map(() => 1)];
    const mu = reduce(ctx, 'ReduceMean', x, axes);
    const centred = g.op('Sub', [x, mu]);
    const v = reduce(ctx, 'ReduceMean', g.op('Mul', [centred, centred]), axes);
    const sd = g.op('Sqrt', [g.op('Add', [v, scalar(g, 'eps', eps)])]);
    const y = g.op('Add', [g.op('Mul', [g.op('Div', [centred, sd]), reshape(ctx, scale, bshape)]), reshape(ctx, bias, bshape)]);
    const m = opts.momentum ?? 0.1;
    const flat = (t: Value): Value => reshape(ctx, t, [c]);
    const keep = scalar(g, 'keep', 1 - m);
    const newMean = g.op('Add', [g.op('Mul', [mean, keep]), g.op('Mul', [flat(mu), scalar(g, 'momentum', m)])]);
    const newVar = g.op('Add', [g.op('Mul', [variance, keep]), g.op('Mul', [flat(v), scalar(g, 'momentum_unbiased', (m * count) / Math.max(1, count - 1))])]);
    ctx.state?.set(mean.name, newMean);
    ctx.state?.set(variance.name, newVar);
    return y;
  });
}

/** A per-layer constant from the layer's (unique) name, so every dropout layer draws its own mask. */
function nameSalt(name: string): number {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619) >>> 0;
  return (h % 100003) * 1.618033988749;
}

/**
 * Dropout (per element) or Dropout2d (per channel of [N, C, H, W]); identity in eval. The mask comes
 * from a hash of the element index, the layer and the step's seed input (u = frac(sin(phase) * 43758.5453)),
 * so a seed reproduces a run on any ONNX runtime without RNG state in the graph. The phase is a float32
 * sum of per-axis terms already reduced mod 2 pi: float32 Sin ran 3.6x faster than float64 in ORT, and
 * on the paper CNN the float64 masks took 8% of a training step.
 */
export function dropout(ctx: LayerContext, x: Value, p: number, opts: { channelwise?: boolean; name?: string } = {}): Value {
  const { g } = ctx;
  if (!isTraining(ctx) || p <= 0) return x;
  if (!ctx.dropoutSeed) throw new GraphError(`${g.currentScope}: training-mode dropout needs ctx.dropoutSeed`);
  return g.scope(opts.name ?? (opts.channelwise ? 'dropout2d' : 'dropout'), () => {
    const shape = x.shape.map((_, i) => (opts.channelwise && i >= 2 ? 1 : fixedDim(x, i, `${g.currentScope} (training needs a fixed batch)`)));
    // The element index times a hash constant, as a sum of one small broadcast constant per axis
    // (a full-size constant would put gigabytes into the model at batch 64), each reduced mod 2 pi in
    // float64 here so the float32 sum stays small and exact enough.
    const twoPi = 2 * Math.PI;
    const salt = nameSalt(g.uniqueName('index'));
    const strides = shape.map((_, a) => shape.slice(a + 1).reduce((p, d) => p * d, 1));
    let phase: Value | undefined;
    shape.forEach((d, a) => {
      const stride = strides[a];
      const axisShape = shape.map((_, k) => (k === a ? d : 1));
      const term = g.initializer('index', tensor('float32', axisShape, Float32Array.from({ length: d }, (_, k) => (k * stride * 12.9898 + (a === 0 ? salt : 0)) % twoPi)));
      phase = phase ? g.op('Add', [phase, term]) : term;
    });
    const seedPhase = g.op('Cast', [g.op('Mod', [g.op('Mul', [ctx.dropoutSeed!, scalar(g, 'seed_scale', 78.233, 'float64')]), scalar(g, 'two_pi', twoPi, 'float64')], { fmod: 1 })], { to: 1 });
    const h = g.op('Mul', [g.op('Sin', [g.op('Add', [phase!, seedPhase])]), scalar(g, 'hash_scale', 43758.5453)]);
    const u = g.op('Sub', [h, g.op('Floor', [h])]);
    const keepMask = g.op('Cast', [g.op('GreaterOrEqual', [u, scalar(g, 'p', p)])], { to: x.dtype === 'float64' ? 11 : 1 });
    return g.op('Mul', [x, g.op('Mul', [keepMask, scalar(g, 'rescale', 1 / (1 - p), x.dtype === 'float64' ? 'float64' : 'float32')])]);
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

/**
 * Resampling matrix [inSize, outSize] (right-multiplied: x [.., inSize] -> [.., outSize]). Upsampling
 * interpolates linearly (half-pixel centres); downsampling averages the covered input cells by area,
 * as the datasets' images are made (resizeArea).
 */
export function resampleMatrix(inSize: number, outSize: number): Float32Array {
  const m = new Float32Array(inSize * outSize);
  if (outSize >= inSize) {
    for (let o = 0; o < outSize; o++) {
      const c = Math.min(inSize - 1, Math.max(0, ((o + 0.5) * inSize) / outSize - 0.5));
      const i0 = Math.floor(c);
      const i1 = Math.min(inSize - 1, i0 + 1);
      m[i0 * outSize + o] += 1 - (c - i0);
      m[i1 * outSize + o] += c - i0;
    }
    return m;
  }
  const scale = inSize / outSize;
  for (let o = 0; o < outSize; o++) {
    const a = o * scale;
    const b = a + scale;
    for (let i = Math.floor(a); i < Math.min(inSize, Math.ceil(b)); i++) m[i * outSize + o] = (Math.min(b, i + 1) - Math.max(a, i)) / scale;
  }
  return m;
}

/** Resize images [B, 1, H, W] to [B, 1, outH, outW] with two constant MatMuls (differentiable, no Resize op). */
export function resizeImage(ctx: LayerContext, x: Value, outH: number, outW: number): Value {
  const { g } = ctx;
  const H = fixedDim(x, 2, 'resize');
  const W = fixedDim(x, 3, 'resize');
  if (H === outH && W === outW) return x;
  return g.scope('resize', () => {
    let y = x;
    if (W !== outW) y = g.op('MatMul', [y, g.initializer('columns', tensor('float32', [W, outW], resampleMatrix(W, outW)))]);
    if (H !== outH) {
      const t = g.op('Transpose', [y], { perm: [0, 1, 3, 2] });
      y = g.op('Transpose', [g.op('MatMul', [t, g.initializer('rows', tensor('float32', [H, outH], resampleMatrix(H, outH)))])], { perm: [0, 1, 3, 2] });
    }
    return y;
  });
}
