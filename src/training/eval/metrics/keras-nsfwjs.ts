import { createRequire } from 'node:module';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tensor, type Graph, type Value } from '../../../models/onnx/index.js';

const require = createRequire(import.meta.url);

/**
 * The MIT-licensed Keras models that ship in the npm package `nsfwjs` (TF.js layers format, weights
 * base64-encoded in .min.js shards, uint8-quantised), read and converted layer by layer into ONNX
 * nodes with our graph builder. InceptionV3 (FID) and MobileNetV2 (the latent decoder's feature
 * space) share this: one reader, one kernel layout conversion, one place that knows Keras semantics.
 */
export type NsfwjsModel = 'inception_v3' | 'mobilenet_v2';

export interface KerasLayer {
  name: string;
  class_name: string;
  config: Record<string, unknown>;
  inbound_nodes: [string, number, number, unknown][][];
}

export interface KerasWeight {
  shape: number[];
  data: Float32Array;
}

export interface KerasModel {
  model: NsfwjsModel;
  /** Topological order, as Keras stores it (every layer after its inputs). */
  layers: KerasLayer[];
  weights: Map<string, KerasWeight>;
}

interface WeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { min: number; scale: number; dtype: string };
}

/** nsfwjs's package root (its "exports" hide package.json, so walk up from the main entry). */
export function nsfwjsRoot(): string {
  let dir = dirname(require.resolve('nsfwjs'));
  while (!existsSync(join(dir, 'package.json')) || !readFileSync(join(dir, 'package.json'), 'utf8').includes('"name": "nsfwjs"')) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot locate the nsfwjs package (npm install)');
    dir = up;
  }
  return dir;
}

export const nsfwjsModelDir = (model: NsfwjsModel): string => join(nsfwjsRoot(), 'dist/models', model);
export const nsfwjsVersion = (): string => (JSON.parse(readFileSync(join(nsfwjsRoot(), 'package.json'), 'utf8')) as { version: string }).version;
/** Where converted networks are cached (one ONNX file per network variant). */
export const defaultCacheDir = (): string => process.env.CORTEXCAST_CACHE ?? join(process.cwd(), '.cache');

/** Topology and dequantised float32 weights of one nsfwjs model. */
export function loadNsfwjsKeras(model: NsfwjsModel): KerasModel {
  const dir = nsfwjsModelDir(model);
  const file = require(join(dir, 'model.min.js')) as {
    modelTopology: { model_config: { config: { layers: KerasLayer[] } } };
    weightsManifest: { paths: string[]; weights: WeightSpec[] }[];
  };
  const weights = new Map<string, KerasWeight>();
  for (const group of file.weightsManifest) {
    const bytes = Buffer.concat(group.paths.map((p) => Buffer.from(require(join(dir, `${p}.min.js`)) as string, 'base64')));
    let off = 0;
    for (const w of group.weights) {
      const n = w.shape.reduce((a, b) => a * b, 1);
      const data = new Float32Array(n);
      if (w.quantization) {
        if (w.quantization.dtype !== 'uint8') throw new Error(`${model} weight ${w.name}: quantisation ${w.quantization.dtype} not supported`);
        for (let i = 0; i < n; i++) data[i] = w.quantization.min + w.quantization.scale * bytes[off + i];
        off += n;
      } else {
        data.set(new Float32Array(bytes.buffer.slice(bytes.byteOffset + off, bytes.byteOffset + off + 4 * n)));
        off += 4 * n;
      }
      weights.set(w.name, { shape: w.shape, data });
    }
    if (off !== bytes.length) throw new Error(`${model} weights: read ${off} of ${bytes.length} bytes (manifest and shards disagree)`);
  }
  return { model, layers: file.modelTopology.model_config.config.layers, weights };
}

/** Keras HWIO kernel -> ONNX OIHW; greyInput sums the RGB input channels (grey repeated to RGB). */
export function kernelToOnnx(w: KerasWeight, greyInput: boolean): { dims: number[]; data: Float32Array } {
  const [kh, kw, cin, cout] = w.shape;
  const ci = greyInput ? 1 : cin;
  const out = new Float32Array(cout * ci * kh * kw);
  for (let y = 0; y < kh; y++)
    for (let x = 0; x < kw; x++)
      for (let c = 0; c < cin; c++)
        for (let o = 0; o < cout; o++) out[((o * ci + (greyInput ? 0 : c)) * kh + y) * kw + x] += w.data[((y * kw + x) * cin + c) * cout + o];
  return { dims: [cout, ci, kh, kw], data: out };
}

/**
 * Keras depthwise kernel [kh, kw, channels, multiplier] -> ONNX grouped-conv weight
 * [channels * multiplier, 1, kh, kw]: TF orders the outputs channel-major (output c * m + q reads
 * input channel c), which is exactly ONNX's group = channels layout.
 */
export function depthwiseKernelToOnnx(w: KerasWeight): { dims: number[]; data: Float32Array } {
  const [kh, kw, ch, mult] = w.shape;
  const out = new Float32Array(ch * mult * kh * kw);
  for (let y = 0; y < kh; y++)
    for (let x = 0; x < kw; x++)
      for (let c = 0; c < ch; c++) for (let q = 0; q < mult; q++) out[((c * mult + q) * kh + y) * kw + x] = w.data[((y * kw + x) * ch + c) * mult + q];
  return { dims: [ch * mult, 1, kh, kw], data: out };
}

/**
 * TF "same" padding as explicit ONNX pads [begin..., end...] for a fixed input size: output
 * ceil(n / s), total padding max((out - 1) s + k - n, 0), the odd pixel at the end. With stride 1
 * this is floor((k-1)/2) before and ceil((k-1)/2) after whatever the size; with stride 2 it depends
 * on the size (an even input pads only after), which is why ONNX's auto_pad is not used.
 */
export function samePads(kernel: readonly number[], strides: readonly number[], input: readonly number[]): number[] {
  const total = kernel.map((k, i) => {
    const n = input[i];
    const out = Math.ceil(n / strides[i]);
    return Math.max((out - 1) * strides[i] + k - n, 0);
  });
  return [...total.map((t) => Math.floor(t / 2)), ...total.map((t) => t - Math.floor(t / 2))];
}

const spatialOf = (v: Value, label: string): number[] =>
  v.shape.slice(2).map((d) => {
    if (typeof d !== 'number') throw new Error(`${label}: spatial size of ${v.name} must be fixed, is ${String(d)}`);
    return d;
  });

const scalar = (g: Graph, name: string, v: number): Value => g.initializer(name, tensor('float32', [], Float32Array.of(v)), { exactName: true });

/**
 * One Keras layer (other than InputLayer) as ONNX nodes on NCHW values. The node producing the
 * layer's output is named after the layer, and its weights `<layer>/<weight>`, so a converted graph
 * reads like the Keras summary. `label` names the network in errors. Conv2D's grey-input fold
 * applies where the input has one channel (grey images stand for R = G = B).
 */
export function kerasLayerToOnnx(g: Graph, keras: KerasModel, L: KerasLayer, ins: Value[], label: string): Value {
  const c = L.config;
  const w = (name: string): KerasWeight => {
    const t = keras.weights.get(name);
    if (!t) throw new Error(`${label}: weight ${name} missing`);
    return t;
  };
  const init = (name: string, dims: number[], data: Float32Array): Value => g.initializer(name, tensor('float32', dims, data), { exactName: true });
  const padsOf = (kernel: number[], strides: number[]): number[] =>
    c.padding === 'same' ? samePads(kernel, strides, spatialOf(ins[0], label)) : c.padding === 'valid' ? [0, 0, 0, 0] : fail(`padding ${String(c.padding)}`);
  const fail = (what: string): never => {
    throw new Error(`${label}: layer ${L.name} (${L.class_name}): ${what} is not supported`);
  };
  const checkDilation = (): void => {
    const d = c.dilation_rate as number[] | undefined;
    if (d && d.some((v) => v !== 1)) fail(`dilation ${d.join('x')}`);
  };
  /** Keras's fused activation of Conv2D / DepthwiseConv2D / Dense, applied after the bias. */
  const activate = (v: Value, producer: string, renameFinal: boolean): Value => {
    const act = (c.activation as string | undefined) ?? 'linear';
    if (act === 'linear') return v;
    const opts = renameFinal ? { name: L.name } : {};
    if (act === 'relu') return g.op('Relu', [v], {}, opts);
    if (act === 'softmax') return g.op('Softmax', [v], { axis: -1 }, opts);
    return fail(`activation ${act} (after ${producer})`);
  };
  const fusedName = (): string => ((c.activation as string | undefined) ?? 'linear') === 'linear' ? L.name : `${L.name}/linear`;
  switch (L.class_name) {
    case 'Conv2D':
    case 'DepthwiseConv2D': {
      checkDilation();
      const ks = c.kernel_size as number[];
      const strides = c.strides as number[];
      const depthwise = L.class_name === 'DepthwiseConv2D';
      const k = depthwise ? depthwiseKernelToOnnx(w(`${L.name}/depthwise_kernel`)) : kernelToOnnx(w(`${L.name}/kernel`), ins[0].shape[1] === 1);
      const kernel = init(`${L.name}/${depthwise ? 'depthwise_kernel' : 'kernel'}`, k.dims, k.data);
      const bias = c.use_bias ? init(`${L.name}/bias`, [k.dims[0]], w(`${L.name}/bias`).data) : undefined;
      const group = depthwise ? (ins[0].shape[1] as number) : undefined;
      const conv = g.op('Conv', [ins[0], kernel, bias], { kernel_shape: ks, strides, pads: padsOf(ks, strides), group }, { name: fusedName() });
      return activate(conv, 'Conv', true);
    }
    case 'BatchNormalization': {
      if (c.axis !== -1 && c.axis !== 3 && !(Array.isArray(c.axis) && c.axis.length === 1 && c.axis[0] === 3)) fail(`axis ${JSON.stringify(c.axis)}`);
      const ch = w(`${L.name}/moving_mean`).shape[0];
      const gamma = c.scale ? w(`${L.name}/gamma`).data : new Float32Array(ch).fill(1);
      const beta = c.center ? w(`${L.name}/beta`).data : new Float32Array(ch);
      const p = (n: string, d: Float32Array): Value => init(`${L.name}/${n}`, [ch], d);
      return g.op('BatchNormalization', [ins[0], p('gamma', gamma), p('beta', beta), p('mean', w(`${L.name}/moving_mean`).data), p('var', w(`${L.name}/moving_variance`).data)], { epsilon: c.epsilon as number }, { name: L.name });
    }
    case 'Activation':
      if (c.activation !== 'relu') fail(`activation ${String(c.activation)}`);
      return g.op('Relu', [ins[0]], {}, { name: L.name });
    case 'ReLU': {
      // MobileNetV2's ReLU6 is ReLU(max_value = 6); a leaky slope or a threshold would need other ops.
      if ((c.negative_slope as number | undefined ?? 0) !== 0 || (c.threshold as number | undefined ?? 0) !== 0) fail('a negative slope or threshold');
      const max = c.max_value as number | null | undefined;
      if (max === null || max === undefined) return g.op('Relu', [ins[0]], {}, { name: L.name });
      return g.op('Clip', [ins[0], scalar(g, `${L.name}/min`, 0), scalar(g, `${L.name}/max`, max)], {}, { name: L.name });
    }
    case 'ZeroPadding2D': {
      const [[top, bottom], [left, right]] = c.padding as [[number, number], [number, number]];
      const pads = g.initializer(`${L.name}/pads`, tensor('int64', [8], [0, 0, top, left, 0, 0, bottom, right]), { exactName: true });
      return g.op('Pad', [ins[0], pads], { mode: 'constant' }, { name: L.name });
    }
    case 'MaxPooling2D':
    case 'AveragePooling2D': {
      const ks = c.pool_size as number[];
      const strides = c.strides as number[];
      // TF's "same" average pooling excludes the padding from the count, as ONNX's default does.
      return g.op(L.class_name === 'MaxPooling2D' ? 'MaxPool' : 'AveragePool', [ins[0]], { kernel_shape: ks, strides, pads: padsOf(ks, strides) }, { name: L.name });
    }
    case 'Concatenate':
      return g.op('Concat', ins, { axis: 1 }, { name: L.name });
    case 'Add':
      if (ins.length !== 2) fail(`${ins.length} inputs`);
      return g.op('Add', ins, {}, { name: L.name });
    case 'Flatten': {
      // Keras flattens NHWC; transpose back first so a following Dense reads its weights in order.
      const nhwc = ins[0].shape.length === 4 ? g.op('Transpose', [ins[0]], { perm: [0, 2, 3, 1] }, { name: `${L.name}/nhwc` }) : ins[0];
      return g.op('Flatten', [nhwc], { axis: 1 }, { name: L.name });
    }
    case 'Dense': {
      const k = w(`${L.name}/kernel`);
      const [inDim, units] = k.shape;
      if (ins[0].shape.length !== 2 || ins[0].shape[1] !== inDim) fail(`input ${ins[0].name} of shape [${ins[0].shape.join(', ')}] for a ${inDim}-input kernel`);
      let y = g.op('MatMul', [ins[0], init(`${L.name}/kernel`, k.shape, k.data)], {}, { name: c.use_bias ? `${L.name}/matmul` : fusedName() });
      if (c.use_bias) y = g.op('Add', [y, init(`${L.name}/bias`, [units], w(`${L.name}/bias`).data)], {}, { name: fusedName() });
      return activate(y, 'Dense', true);
    }
    case 'Dropout':
      // Inference: dropout is the identity; the layer's name maps onto its input's value.
      return ins[0];
    default:
      return fail('the layer class');
  }
}
