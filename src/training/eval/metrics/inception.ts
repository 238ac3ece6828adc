import { createRequire } from 'node:module';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { newGraph, tensor, writeModel, type Graph, type Value } from '../../../models/onnx/index.js';

const require = createRequire(import.meta.url);

/**
 * InceptionV3 feature extractor for FID, converted from the MIT-licensed, fine-tuned InceptionV3 that
 * ships in the npm package `nsfwjs` (a TF.js Keras model with uint8-quantised weights). We convert its
 * Keras topology into an ONNX graph with our builder, once, and cache the ONNX file under .cache/.
 * Because the network was fine-tuned (and its weights quantised), FID values are close to, not
 * identical with, torchmetrics' numbers.
 */
export type FidFeatures = 64 | 2048;

const FEATURE_LAYER: Record<FidFeatures, string> = { 64: 'max_pooling2d_1', 2048: 'average_pooling2d_10' };
export const FID_INPUT = 299;

interface KerasLayer {
  name: string;
  class_name: string;
  config: Record<string, unknown>;
  inbound_nodes: [string, number, number, unknown][][];
}

interface WeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { min: number; scale: number; dtype: string };
}

/** nsfwjs's package root (its "exports" hide package.json, so walk up from the main entry). */
function nsfwjsRoot(): string {
  let dir = dirname(require.resolve('nsfwjs'));
  while (!existsSync(join(dir, 'package.json')) || !readFileSync(join(dir, 'package.json'), 'utf8').includes('"name": "nsfwjs"')) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot locate the nsfwjs package (npm install)');
    dir = up;
  }
  return dir;
}
const modelDir = (): string => join(nsfwjsRoot(), 'dist/models/inception_v3');
export const nsfwjsVersion = (): string => (JSON.parse(readFileSync(join(nsfwjsRoot(), 'package.json'), 'utf8')) as { version: string }).version;

function loadKeras(): { layers: KerasLayer[]; weights: Map<string, { shape: number[]; data: Float32Array }> } {
  const dir = modelDir();
  const model = require(join(dir, 'model.min.js')) as {
    modelTopology: { model_config: { config: { layers: KerasLayer[] } } };
    weightsManifest: { paths: string[]; weights: WeightSpec[] }[];
  };
  const weights = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const group of model.weightsManifest) {
    const bytes = Buffer.concat(group.paths.map((p) => Buffer.from(require(join(dir, `${p}.min.js`)) as string, 'base64')));
    let off = 0;
    for (const w of group.weights) {
      const n = w.shape.reduce((a, b) => a * b, 1);
      const data = new Float32Array(n);
      if (w.quantization) {
        if (w.quantization.dtype !== 'uint8') throw new Error(`inception weight ${w.name}: quantisation ${w.quantization.dtype} not supported`);
        for (let i = 0; i < n; i++) data[i] = w.quantization.min + w.quantization.scale * bytes[off + i];
        off += n;
      } else {
        data.set(new Float32Array(bytes.buffer.slice(bytes.byteOffset + off, bytes.byteOffset + off + 4 * n)));
        off += 4 * n;
      }
      weights.set(w.name, { shape: w.shape, data });
    }
    if (off !== bytes.length) throw new Error(`inception weights: read ${off} of ${bytes.length} bytes (manifest and shards disagree)`);
  }
  return { layers: model.modelTopology.model_config.config.layers, weights };
}

/** Keras HWIO kernel -> ONNX OIHW; greyInput sums the RGB input channels (grey repeated to RGB). */
function kernelToOnnx(w: { shape: number[]; data: Float32Array }, greyInput: boolean): { dims: number[]; data: Float32Array } {
  const [kh, kw, cin, cout] = w.shape;
  const ci = greyInput ? 1 : cin;
  const out = new Float32Array(cout * ci * kh * kw);
  for (let y = 0; y < kh; y++)
    for (let x = 0; x < kw; x++)
      for (let c = 0; c < cin; c++)
        for (let o = 0; o < cout; o++) out[((o * ci + (greyInput ? 0 : c)) * kh + y) * kw + x] += w.data[((y * kw + x) * cin + c) * cout + o];
  return { dims: [cout, ci, kh, kw], data: out };
}

function samePads(k: number[], strides: number[]): number[] {
  if (strides.some((s) => s !== 1)) throw new Error('inception: "same" padding with stride > 1 is not used by InceptionV3');
  const begin = k.map((v) => Math.floor((v - 1) / 2));
  const end = k.map((v) => Math.ceil((v - 1) / 2));
  return [...begin, ...end];
}

/** Build the feature graph: input [batch, 1, 299, 299] grey in [0,1], output [batch, features]. */
export function buildInceptionGraph(features: FidFeatures): Graph {
  const { layers, weights } = loadKeras();
  const g = newGraph(`inception_v3_fid${features}`);
  const values = new Map<string, Value>();
  const w = (name: string): { shape: number[]; data: Float32Array } => {
    const t = weights.get(name);
    if (!t) throw new Error(`inception: weight ${name} missing`);
    return t;
  };
  const target = FEATURE_LAYER[features];
  for (const L of layers) {
    const ins = (L.inbound_nodes[0] ?? []).map((n) => values.get(n[0])!);
    const c = L.config;
    let out: Value;
    switch (L.class_name) {
      case 'InputLayer':
        out = g.input('image', 'float32', ['batch', 1, FID_INPUT, FID_INPUT]);
        break;
      case 'Conv2D': {
        const k = kernelToOnnx(w(`${L.name}/kernel`), ins[0].shape[1] === 1);
        const ks = c.kernel_size as number[];
        const strides = c.strides as number[];
        const pads = c.padding === 'same' ? samePads(ks, strides) : [0, 0, 0, 0];
        out = g.op('Conv', [ins[0], g.initializer(`${L.name}/kernel`, tensor('float32', k.dims, k.data), { exactName: true })], { kernel_shape: ks, strides, pads }, { name: L.name });
        break;
      }
      case 'BatchNormalization': {
        const beta = w(`${L.name}/beta`);
        const ch = beta.shape[0];
        const gamma = c.scale ? w(`${L.name}/gamma`).data : new Float32Array(ch).fill(1);
        const p = (n: string, d: Float32Array): Value => g.initializer(`${L.name}/${n}`, tensor('float32', [ch], d), { exactName: true });
        out = g.op('BatchNormalization', [ins[0], p('gamma', gamma), p('beta', beta.data), p('mean', w(`${L.name}/moving_mean`).data), p('var', w(`${L.name}/moving_variance`).data)], { epsilon: c.epsilon as number }, { name: L.name });
        break;
      }
      case 'Activation':
        if (c.activation !== 'relu') throw new Error(`inception: activation ${String(c.activation)} not supported`);
        out = g.op('Relu', [ins[0]], {}, { name: L.name });
        break;
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        const ks = c.pool_size as number[];
        const strides = c.strides as number[];
        const pads = c.padding === 'same' ? samePads(ks, strides) : [0, 0, 0, 0];
        // TF's "same" average pooling excludes the padding from the count, as ONNX's default does.
        out = g.op(L.class_name === 'MaxPooling2D' ? 'MaxPool' : 'AveragePool', [ins[0]], { kernel_shape: ks, strides, pads }, { name: L.name });
        break;
      }
      case 'Concatenate':
        out = g.op('Concat', ins, { axis: 1 }, { name: L.name });
        break;
      default:
        throw new Error(`inception: layer ${L.name} (${L.class_name}) comes before the feature layer and is not supported`);
    }
    values.set(L.name, out);
    if (L.name === target) {
      const pooled = g.op('GlobalAveragePool', [out]);
      g.output(g.op('Flatten', [pooled], { axis: 1 }), 'features');
      return g;
    }
  }
  throw new Error(`inception: feature layer ${target} not found`);
}

/** The cached ONNX feature model, converted on first use. */
export function inceptionModel(features: FidFeatures, cacheDir = defaultCacheDir()): Uint8Array {
  const file = join(cacheDir, `inception-nsfwjs${nsfwjsVersion()}-fid${features}.onnx`);
  if (existsSync(file)) return new Uint8Array(readFileSync(file));
  const bytes = writeModel(buildInceptionGraph(features), { docString: 'InceptionV3 (nsfwjs, fine-tuned, MIT) features for FID' });
  mkdirSync(cacheDir, { recursive: true });
  writeFileSync(file, bytes);
  return bytes;
}

export const defaultCacheDir = (): string => process.env.CORTEXCAST_CACHE ?? join(process.cwd(), '.cache');
