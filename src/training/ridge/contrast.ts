import { resizeArea } from '../../datasets/image-ops.js';
import { gaussianWindow1d } from '../eval/metrics/image-metrics.js';
import type { PreparedData, PreparedSplit } from '../../datasets/preprocess.js';

/**
 * Local contrast energy of images [count, H*W]: sqrt(blur((x - blur(x))^2)), Gaussian blurs of
 * `sigma` pixels. Why a decoder wants it: complex cells respond to contrast whatever its polarity,
 * so they carry almost nothing a linear map to pixels can use, but a linear map to this energy can:
 * a second ridge fitted to it tells the refiner where the stimulus has edges that the (shrunk,
 * blurred) ridge image under-draws.
 */
export function localContrast(images: Float32Array, count: number, height: number, width: number, sigma = 1.5): Float32Array {
  const P = height * width;
  if (images.length !== count * P) throw new RangeError(`local contrast: ${images.length} values are not ${count} images of ${height}x${width}`);
  const out = new Float32Array(images.length);
  for (let i = 0; i < count; i++) {
    const x = images.subarray(i * P, (i + 1) * P);
    const low = blurImage(x, height, width, sigma);
    const energy = blurImage(x.map((v, p) => (v - low[p]) ** 2), height, width, sigma);
    out.set(energy.map((v) => Math.sqrt(Math.max(0, v))), i * P);
  }
  return out;
}

/**
 * The data with every tier's images replaced by their local contrast: what the contrast ridge is
 * fitted to. With `downsample` f > 1 the maps are area-averaged to a round(H/f) x round(W/f) grid (the
 * data's height and width become the grid's): the energy is blurred, so a coarse grid keeps most of it.
 */
export function contrastTargets(data: PreparedData, o: { sigma?: number; downsample?: number } = {}): PreparedData {
  const f = o.downsample ?? 1;
  if (!(Number.isInteger(f) && f >= 1)) throw new RangeError(`contrast read-out: downsample ${f} must be a whole number >= 1`);
  const [H, W] = [data.height, data.width];
  // Sizes that f does not divide get the nearest grid (area resampling takes any ratio).
  const [h, w] = [Math.max(1, Math.round(H / f)), Math.max(1, Math.round(W / f))];
  const tier = (s: PreparedSplit): PreparedSplit => {
    const maps = localContrast(s.images, s.count, H, W, o.sigma);
    if (f === 1) return { ...s, images: maps };
    const coarse = new Float32Array(s.count * h * w);
    for (let i = 0; i < s.count; i++) resizeArea(maps.subarray(i * H * W, (i + 1) * H * W), H, W, h, w, coarse.subarray(i * h * w, (i + 1) * h * w));
    return { ...s, images: coarse };
  };
  return { ...data, height: h, width: w, train: tier(data.train), validation: tier(data.validation), test: tier(data.test) };
}

/** Separable Gaussian blur of one H x W image (radius 3 sigma, edges clamped, so a flat image stays flat). */
export function blurImage(src: Float32Array, H: number, W: number, sigma: number): Float32Array {
  if (!(sigma > 0)) throw new RangeError(`blur: sigma ${sigma} must be positive`);
  const r = Math.ceil(3 * sigma);
  const k = gaussianWindow1d(sigma, r);
  const tmp = new Float32Array(H * W);
  const out = new Float32Array(H * W);
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      let s = 0;
      for (let j = -r; j <= r; j++) s += k[j + r] * src[y * W + Math.min(W - 1, Math.max(0, x + j))];
      tmp[y * W + x] = s;
    }
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      let s = 0;
      for (let j = -r; j <= r; j++) s += k[j + r] * tmp[Math.min(H - 1, Math.max(0, y + j)) * W + x];
      out[y * W + x] = s;
    }
  return out;
}
