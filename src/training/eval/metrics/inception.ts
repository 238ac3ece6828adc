import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { newGraph, writeModel, type Graph, type Value } from '../../../models/onnx/index.js';
import { defaultCacheDir, kerasLayerToOnnx, loadNsfwjsKeras, nsfwjsVersion } from './keras-nsfwjs.js';

export { defaultCacheDir, nsfwjsVersion } from './keras-nsfwjs.js';

/**
 * InceptionV3 feature extractor for FID, converted from the MIT-licensed, fine-tuned InceptionV3 that
 * ships in the npm package `nsfwjs` (a TF.js Keras model with uint8-quantised weights). We convert its
 * Keras topology into an ONNX graph with our builder, once, and cache the ONNX file under .cache/.
 * Because the network was fine-tuned (and its weights quantised), FID values are close to, not
 * identical with, torchmetrics' numbers.
 */
export type FidFeatures = 64 | 2048;
/**
 * 'low': the second pooling stage (max_pooling2d_2, 192 channels on a 35 x 35 grid) averaged over a
 * 5 x 5 grid of 7 x 7 cells, 4,800 values: where edges and textures are, for low-level identification.
 */
export type InceptionFeatures = FidFeatures | 'low';

const FEATURE_LAYER: Record<InceptionFeatures, string> = { 64: 'max_pooling2d_1', 2048: 'average_pooling2d_10', low: 'max_pooling2d_2' };
export const FID_INPUT = 299;

/** Build the feature graph: input [batch, 1, 299, 299] grey in [0,1], output [batch, features]. */
export function buildInceptionGraph(features: InceptionFeatures): Graph {
  const keras = loadNsfwjsKeras('inception_v3');
  const g = newGraph(`inception_v3_fid${features}`);
  const values = new Map<string, Value>();
  const target = FEATURE_LAYER[features];
  for (const L of keras.layers) {
    const ins = (L.inbound_nodes[0] ?? []).map((n) => values.get(n[0])!);
    const out = L.class_name === 'InputLayer' ? g.input('image', 'float32', ['batch', 1, FID_INPUT, FID_INPUT]) : kerasLayerToOnnx(g, keras, L, ins, 'inception');
    values.set(L.name, out);
    if (L.name === target) {
      const pooled = features === 'low' ? g.op('AveragePool', [out], { kernel_shape: [7, 7], strides: [7, 7] }) : g.op('GlobalAveragePool', [out]);
      g.output(g.op('Flatten', [pooled], { axis: 1 }), 'features');
      return g;
    }
  }
  throw new Error(`inception: feature layer ${target} not found`);
}

/** The cached ONNX feature model, converted on first use. */
export function inceptionModel(features: InceptionFeatures, cacheDir = defaultCacheDir()): Uint8Array {
  const file = join(cacheDir, `inception-nsfwjs${nsfwjsVersion()}-fid${features}.onnx`);
  if (existsSync(file)) return new Uint8Array(readFileSync(file));
  const bytes = writeModel(buildInceptionGraph(features), { docString: 'InceptionV3 (nsfwjs, fine-tuned, MIT) features for FID' });
  mkdirSync(cacheDir, { recursive: true });
  // A unique temporary file renamed into place: parallel runs never read half a file, a crash leaves none.
  const tmp = `${file}.${randomUUID()}.tmp`;
  writeFileSync(tmp, bytes);
  renameSync(tmp, file);
  return bytes;
}

