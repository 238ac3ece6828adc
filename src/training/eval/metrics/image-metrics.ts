import { minMax } from '../../../datasets/image-ops.js';

/**
 * Image metrics exactly as the report defines them for Table I. SSIM matches scikit-image's
 * structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1):
 * an 11x11 Gaussian window (truncate 3.5), mean over the valid region (skimage crops the 5-pixel border,
 * where its padding would matter, so filtering in 'valid' mode gives the same numbers).
 */
export const SSIM_SIGMA = 1.5;
export const SSIM_RADIUS = 5;
const K1 = 0.01;
const K2 = 0.03;

export function gaussianWindow1d(sigma = SSIM_SIGMA, radius = SSIM_RADIUS): Float64Array {
  const w = new Float64Array(2 * radius + 1);
  let s = 0;
  for (let i = -radius; i <= radius; i++) s += w[i + radius] = Math.exp((-0.5 * i * i) / (sigma * sigma));
  return w.map((v) => v / s);
}

const WINDOW = gaussianWindow1d();

/** Separable 'valid' filtering of an h x w image with the SSIM window. */
function filterValid(x: Float64Array, h: number, w: number): Float64Array {
  const k = WINDOW;
  const r = SSIM_RADIUS;
  const ow = w - 2 * r;
  const oh = h - 2 * r;
  const tmp = new Float64Array(h * ow);
  for (let y = 0; y < h; y++)
    for (let x0 = 0; x0 < ow; x0++) {
      let s = 0;
      for (let j = 0; j < k.length; j++) s += k[j] * x[y * w + x0 + j];
      tmp[y * ow + x0] = s;
    }
  const out = new Float64Array(oh * ow);
  for (let y0 = 0; y0 < oh; y0++)
    for (let x0 = 0; x0 < ow; x0++) {
      let s = 0;
      for (let j = 0; j < k.length; j++) s += k[j] * tmp[(y0 + j) * ow + x0];
      out[y0 * ow + x0] = s;
    }
  return out;
}

/** SSIM of one pair (data range 1), no rescaling. */
export function ssim(a: ArrayLike<number>, b: ArrayLike<number>, h: number, w: number, dataRange = 1): number {
  if (h < 2 * SSIM_RADIUS + 1 || w < 2 * SSIM_RADIUS + 1) throw new Error(`SSIM needs images of at least 11x11, got ${h}x${w}`);
  const n = h * w;
  const x = Float64Array.from(a);
  const y = Float64Array.from(b);
  const xx = new Float64Array(n);
  const yy = new Float64Array(n);
  const xy = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    xx[i] = x[i] * x[i];
    yy[i] = y[i] * y[i];
    xy[i] = x[i] * y[i];
  }
  const [ux, uy, uxx, uyy, uxy] = [x, y, xx, yy, xy].map((m) => filterValid(m, h, w));
  const c1 = (K1 * dataRange) ** 2;
  const c2 = (K2 * dataRange) ** 2;
  let total = 0;
  for (let i = 0; i < ux.length; i++) {
    const vx = uxx[i] - ux[i] * ux[i];
    const vy = uyy[i] - uy[i] * uy[i];
    const vxy = uxy[i] - ux[i] * uy[i];
    total += ((2 * ux[i] * uy[i] + c1) * (2 * vxy + c2)) / ((ux[i] * ux[i] + uy[i] * uy[i] + c1) * (vx + vy + c2));
  }
  return total / ux.length;
}

export const ssimMinMax = (a: ArrayLike<number>, b: ArrayLike<number>, h: number, w: number): number => ssim(minMax(a), minMax(b), h, w);
export const ssimLoss = (s: number): number => (1 - s) / 2;
export const logSsimLoss = (s: number): number => -Math.log((s + 1) / 2 + 1e-6);

export function mseMinMax(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const x = minMax(a);
  const y = minMax(b);
  let s = 0;
  for (let i = 0; i < x.length; i++) s += (x[i] - y[i]) ** 2;
  return s / x.length;
}

/** Pearson correlation of the flattened pixels. */
export function pixCorr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length;
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) {
    ma += a[i] / n;
    mb += b[i] / n;
  }
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    const da = a[i] - ma;
    const db = b[i] - mb;
    sab += da * db;
    saa += da * da;
    sbb += db * db;
  }
  return sab / Math.sqrt(saa * sbb + 1e-30);
}

export interface ImageScores {
  ssim: number;
  ssiml: number;
  mse: number;
  pixcorr: number;
}

/** Mean per-image scores over a set of [count, h*w] images (targets first). */
export function scoreImages(targets: Float32Array, recon: Float32Array, count: number, h: number, w: number): ImageScores & { perImage: ImageScores[] } {
  const P = h * w;
  const perImage: ImageScores[] = [];
  for (let i = 0; i < count; i++) {
    const t = targets.subarray(i * P, (i + 1) * P);
    const r = recon.subarray(i * P, (i + 1) * P);
    const s = ssimMinMax(r, t, h, w);
    perImage.push({ ssim: s, ssiml: ssimLoss(s), mse: mseMinMax(r, t), pixcorr: pixCorr(r, t) });
  }
  const mean = (k: keyof ImageScores): number => perImage.reduce((a, p) => a + p[k], 0) / count;
  return { ssim: mean('ssim'), ssiml: mean('ssiml'), mse: mean('mse'), pixcorr: mean('pixcorr'), perImage };
}
