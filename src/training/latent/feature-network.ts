import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createHash, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { newGraph, tensor, writeModel, type Graph, type Value } from '../../models/onnx/index.js';
import { createSession, runOnce } from '../../models/ort.js';
import { defaultCacheDir, kerasLayerToOnnx, loadNsfwjsKeras, nsfwjsVersion, type KerasModel } from '../eval/metrics/keras-nsfwjs.js';

/**
 * The feature-space latent's image network: the MIT-licensed MobileNetV2 that ships in `nsfwjs`
 * (Keras 2.2.4 model, uint8-quantised weights, fine-tuned for nsfwjs's 5-class task on top of an
 * ImageNet MobileNetV2), converted to ONNX with our builder. MobileNetV2 rather than the InceptionV3
 * also in nsfwjs, so the decoder's space is not the space FID scores it in.
 *
 * Input convention, from nsfwjs's own inference code (dist/esm/core.js `infer`): RGB pixels divided
 * by 255, i.e. [0, 1] with no mean/std normalisation, at 224x224 for its classifier. Our grey images
 * stand for R = G = B, so the first conv's kernel is summed over its RGB inputs and the graph takes
 * one channel. Every layer before the global pooling is convolutional, so any input size works for
 * the feature layers; only the classifier head (flatten_1 .. dense_3) needs 224x224.
 */

/** One candidate latent layer: a block output of MobileNetV2's residual stream. */
export interface FeatureLayer {
  /** Keras layer name (also the graph output's name). */
  name: string;
  channels: number;
  /** Input pixels per feature-map pixel. */
  stride: number;
  /** Inverted-residual block index (0 = expanded_conv, 16 = last), for depth order. */
  block: number;
}

/**
 * Candidates spanning depth: the last block (or last two) of each resolution stage. An inverted
 * residual block's output is its `_add` (residual sum) where it has a skip connection, else its
 * linear bottleneck `_project_BN`; these are the values the next block reads, the network's own
 * representation at that depth (the expand/depthwise activations inside a block are 6x wider and
 * transient). Stride 2 (expanded_conv, 16 channels at 72x128 = 147k dims) is left out as too close
 * to pixels and too large for the ridge; stride 32 is kept to show where the maps become too coarse.
 */
export const FEATURE_LAYERS: readonly FeatureLayer[] = Object.freeze([
  { name: 'block_2_add', channels: 24, stride: 4, block: 2 },
  { name: 'block_4_add', channels: 32, stride: 8, block: 4 },
  { name: 'block_5_add', channels: 32, stride: 8, block: 5 },
  { name: 'block_7_add', channels: 64, stride: 16, block: 7 },
  { name: 'block_9_add', channels: 64, stride: 16, block: 9 },
  { name: 'block_12_add', channels: 96, stride: 16, block: 12 },
  { name: 'block_15_add', channels: 160, stride: 32, block: 15 },
  { name: 'block_16_project_BN', channels: 320, stride: 32, block: 16 },
]);

/**
 * The network's input size for our stimuli: the report's stimuli are 144x256 and our 36x64 images
 * are their 4x4 block means, so upsampling x4 restores the size (and so the scale of edges and
 * textures relative to the receptive fields) at which the report's network saw them and close to
 * MobileNetV2's 224 training scale. Fed at 36x64 the stride-16 map would be 3x4 and the network
 * would see everything 6x smaller than it was trained on. At 144x256 the maps are 36x64 (stride 4),
 * 18x32 (8), 9x16 (16) and 4x8 (32; the stored ZeroPadding2D pads 9 rows to 10, as TF.js runs it).
 */
export const FEATURE_INPUT: Readonly<{ height: number; width: number }> = Object.freeze({ height: 144, width: 256 });

/** Bumped when the conversion changes, so cached ONNX files from an older converter are not reused. */
const CONVERTER_REVISION = 1;

let kerasCache: KerasModel | undefined;
const mobilenet = (): KerasModel => (kerasCache ??= loadNsfwjsKeras('mobilenet_v2'));

/** Keras layer names of nsfwjs's MobileNetV2 in topological order (classifier head included). */
export const mobilenetLayerNames = (): string[] => mobilenet().layers.map((l) => l.name);

/**
 * The converted network up to the deepest requested layer: input 'image' [batch, 1, H, W] grey
 * levels in [0, 1], one NCHW output per requested layer, named as the layer. Any Keras layer name
 * works (e.g. 'dense_3' for nsfwjs's class probabilities, at 224x224).
 */
export function buildFeatureGraph(layers: string[], input: { height: number; width: number }): Graph {
  if (!layers.length) throw new RangeError('buildFeatureGraph: no layer requested');
  const keras = mobilenet();
  const known = new Set(keras.layers.map((l) => l.name));
  const unknown = layers.filter((l) => !known.has(l));
  if (unknown.length) throw new RangeError(`mobilenet_v2: no layer ${unknown.join(', ')} (candidates: ${FEATURE_LAYERS.map((f) => f.name).join(', ')})`);
  if (new Set(layers).size !== layers.length) throw new RangeError(`buildFeatureGraph: layer listed twice in ${layers.join(', ')}`);
  const g = newGraph(`mobilenet_v2_features_${input.height}x${input.width}`);
  const values = new Map<string, Value>();
  const pending = new Set(layers);
  for (const L of keras.layers) {
    const ins = (L.inbound_nodes[0] ?? []).map((n) => values.get(n[0])!);
    const out = L.class_name === 'InputLayer' ? g.input('image', 'float32', ['batch', 1, input.height, input.width]) : kerasLayerToOnnx(g, keras, L, ins, 'mobilenet_v2');
    values.set(L.name, out);
    pending.delete(L.name);
    if (!pending.size) break;
  }
  for (const name of layers) {
    const v = values.get(name)!;
    g.output(v, v.name === name ? undefined : name);
  }
  return g;
}

/** The cached ONNX file for these layers and input size, converted on first use. */
export function featureModel(layers: string[], input: { height: number; width: number }, cacheDir = defaultCacheDir()): Uint8Array {
  let key = layers.join('+');
  // Long lists would make unwieldy file names; a digest keeps the name short and still unique.
  if (key.length > 120) key = createHash('sha256').update(key).digest('hex').slice(0, 16);
  const file = join(cacheDir, `mobilenet_v2-nsfwjs${nsfwjsVersion()}-r${CONVERTER_REVISION}-${input.height}x${input.width}-${key}.onnx`);
  if (existsSync(file)) return new Uint8Array(readFileSync(file));
  const bytes = writeModel(buildFeatureGraph(layers, input), { docString: `MobileNetV2 (nsfwjs, fine-tuned, MIT) features ${layers.join(', ')}` });
  mkdirSync(cacheDir, { recursive: true });
  // A unique temporary file renamed into place: parallel runs never read half a file, a crash leaves none.
  const tmp = `${file}.${randomUUID()}.tmp`;
  writeFileSync(tmp, bytes);
  renameSync(tmp, file);
  return bytes;
}

/**
 * Bilinear resampling with half-pixel centres (ONNX Resize "half_pixel", PyTorch align_corners =
 * False): an x4 upsample keeps each source pixel's centre where it was, so features do not shift
 * against the decoder's 36x64 target.
 */
export function resizeBilinear(src: ArrayLike<number>, h: number, w: number, oh: number, ow: number, out = new Float32Array(oh * ow)): Float32Array {
  const axis = (n: number, on: number): { i0: Int32Array; i1: Int32Array; t: Float32Array } => {
    const i0 = new Int32Array(on);
    const i1 = new Int32Array(on);
    const t = new Float32Array(on);
    for (let o = 0; o < on; o++) {
      const f = Math.min(Math.max((o + 0.5) * (n / on) - 0.5, 0), n - 1);
      i0[o] = Math.floor(f);
      i1[o] = Math.min(i0[o] + 1, n - 1);
      t[o] = f - i0[o];
    }
    return { i0, i1, t };
  };
  const ys = axis(h, oh);
  const xs = axis(w, ow);
  for (let y = 0; y < oh; y++) {
    const r0 = ys.i0[y] * w;
    const r1 = ys.i1[y] * w;
    const ty = ys.t[y];
    for (let x = 0; x < ow; x++) {
      const a = xs.i0[x];
      const b = xs.i1[x];
      const tx = xs.t[x];
      const top = src[r0 + a] + (src[r0 + b] - src[r0 + a]) * tx;
      const bot = src[r1 + a] + (src[r1 + b] - src[r1 + a]) * tx;
      out[y * ow + x] = top + (bot - top) * ty;
    }
  }
  return out;
}

export interface FeatureOptions {
  /** Network input size; default FEATURE_INPUT (144x256). */
  inputHeight?: number;
  inputWidth?: number;
  threads?: number;
  /** Images per ORT run. */
  batch?: number;
  cacheDir?: string;
}

export interface Features {
  /** [count, channels * height * width], each row one image's NCHW map. */
  features: Float32Array;
  /** [channels, height, width]. */
  shape: [number, number, number];
}

/**
 * Features of several layers in one pass: `images` [count, H*W] grey levels in [0, 1], upsampled
 * to the network's input size first. One pass through the network serves every layer.
 */
export async function extractFeatureLayers(images: Float32Array, count: number, H: number, W: number, layers: string[], o: FeatureOptions = {}): Promise<Map<string, Features>> {
  if (images.length !== count * H * W) throw new RangeError(`extractFeatures: ${images.length} values for ${count} images of ${H}x${W}`);
  const input = { height: o.inputHeight ?? FEATURE_INPUT.height, width: o.inputWidth ?? FEATURE_INPUT.width };
  const { session } = await createSession(featureModel(layers, input, o.cacheDir), { intraOpThreads: o.threads });
  const P = input.height * input.width;
  const batch = o.batch ?? 16;
  const out = new Map<string, Features>();
  try {
    for (let b0 = 0; b0 < count; b0 += batch) {
      const nb = Math.min(batch, count - b0);
      const x = new Float32Array(nb * P);
      for (let i = 0; i < nb; i++) {
        const img = images.subarray((b0 + i) * H * W, (b0 + i + 1) * H * W);
        if (H === input.height && W === input.width) x.set(img, i * P);
        else resizeBilinear(img, H, W, input.height, input.width, x.subarray(i * P, (i + 1) * P));
      }
      const res = await runOnce(session, { image: tensor('float32', [nb, 1, input.height, input.width], x) });
      for (const layer of layers) {
        const t = res[layer];
        let f = out.get(layer);
        if (!f) {
          const [, c, h, w] = t.dims;
          if (t.dims.length !== 4) throw new RangeError(`extractFeatures: layer ${layer} is not a feature map (dims [${t.dims.join(', ')}])`);
          f = { features: new Float32Array(count * c * h * w), shape: [c, h, w] };
          out.set(layer, f);
        }
        f.features.set(t.data as Float32Array, b0 * f.shape[0] * f.shape[1] * f.shape[2]);
      }
    }
  } finally {
    await session.release();
  }
  return out;
}

/** One layer's features of `images` [count, H*W] grey in [0, 1] (see extractFeatureLayers). */
export async function extractFeatures(
  images: Float32Array,
  count: number,
  H: number,
  W: number,
  layer: string,
  o: { inputHeight?: number; inputWidth?: number; threads?: number } = {},
): Promise<Features> {
  return (await extractFeatureLayers(images, count, H, W, [layer], o)).get(layer)!;
}
