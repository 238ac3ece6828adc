import { EigenvalueDecomposition, Matrix } from 'ml-matrix';
import type ort from 'onnxruntime-node';
import { tensor } from '../../../models/onnx/index.js';
import { createSession, runOnce } from '../../../models/ort.js';
import { minMax } from '../../../datasets/image-ops.js';
import { FID_INPUT, inceptionModel, type FidFeatures } from './inception.js';

/**
 * FID as the report computes it (torchmetrics, feature=64 by default): each image min-max scaled,
 * x255 and truncated to uint8, grey repeated to RGB (folded into the first conv), resized to 299x299
 * (bilinear, TF1-style corner alignment as torchmetrics' extractor), then the network's own input
 * scaling (/255 for the nsfwjs weights). One FID over the whole set.
 */
export class FidComputer {
  private constructor(
    private readonly session: ort.InferenceSession,
    readonly features: FidFeatures,
  ) {}

  static async create(features: FidFeatures = 64): Promise<FidComputer> {
    const { session } = await createSession(inceptionModel(features));
    return new FidComputer(session, features);
  }

  /** Features of images given as [count, h*w] arrays in any range. */
  embed(images: Float32Array, count: number, h: number, w: number, batch = 16): Promise<Float64Array> {
    return embedImages(this.session, this.features, images, count, h, w, batch);
  }

  async fid(real: Float32Array, fake: Float32Array, count: number, h: number, w: number): Promise<number> {
    const a = await this.embed(real, count, h, w);
    const b = await this.embed(fake, count, h, w);
    return frechetDistance(a, b, count, this.features);
  }
}

/**
 * Images through an InceptionV3 feature session, preprocessed as FID does (see FidComputer): the
 * one place images enter the network, for FID and for identification.
 */
export async function embedImages(session: ort.InferenceSession, dim: number, images: Float32Array, count: number, h: number, w: number, batch = 16): Promise<Float64Array> {
  const out = new Float64Array(count * dim);
  const P = FID_INPUT * FID_INPUT;
  for (let b0 = 0; b0 < count; b0 += batch) {
    const nb = Math.min(batch, count - b0);
    const x = new Float32Array(nb * P);
    for (let i = 0; i < nb; i++) {
      const img = minMax(images.subarray((b0 + i) * h * w, (b0 + i + 1) * h * w));
      const u8 = Float32Array.from(img, (v) => Math.trunc(v * 255));
      resizeBilinearTf1(u8, h, w, FID_INPUT, FID_INPUT, x.subarray(i * P, (i + 1) * P));
      for (let k = i * P; k < (i + 1) * P; k++) x[k] /= 255;
    }
    const res = await runOnce(session, { image: tensor('float32', [nb, 1, FID_INPUT, FID_INPUT], x) });
    out.set(res.features.data as Float32Array, b0 * dim);
  }
  return out;
}

/** Bilinear resize without half-pixel centres (TF1 resize_bilinear, align_corners=False). */
export function resizeBilinearTf1(src: ArrayLike<number>, h: number, w: number, oh: number, ow: number, out = new Float32Array(oh * ow)): Float32Array {
  const sy = h / oh;
  const sx = w / ow;
  for (let y = 0; y < oh; y++) {
    const fy = y * sy;
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, h - 1);
    const dy = fy - y0;
    for (let x = 0; x < ow; x++) {
      const fx = x * sx;
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, w - 1);
      const dx = fx - x0;
      const top = src[y0 * w + x0] * (1 - dx) + src[y0 * w + x1] * dx;
      const bot = src[y1 * w + x0] * (1 - dx) + src[y1 * w + x1] * dx;
      out[y * ow + x] = top * (1 - dy) + bot * dy;
    }
  }
  return out;
}

function meanCov(x: Float64Array, n: number, d: number): { mean: Float64Array; cov: Matrix } {
  const mean = new Float64Array(d);
  for (let i = 0; i < n; i++) for (let j = 0; j < d; j++) mean[j] += x[i * d + j] / n;
  const cov = new Matrix(d, d);
  for (let i = 0; i < n; i++)
    for (let a = 0; a < d; a++) {
      const va = x[i * d + a] - mean[a];
      for (let b = a; b < d; b++) cov.set(a, b, cov.get(a, b) + va * (x[i * d + b] - mean[b]));
    }
  for (let a = 0; a < d; a++)
    for (let b = a; b < d; b++) {
      const v = cov.get(a, b) / (n - 1);
      cov.set(a, b, v);
      cov.set(b, a, v);
    }
  return { mean, cov };
}

/**
 * ||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrt(S1 S2)); tr sqrt(S1 S2) = sum sqrt(eig(sqrt(S1) S2 sqrt(S1))),
 * a symmetric PSD form that avoids a non-symmetric matrix square root.
 */
export function frechetDistance(a: Float64Array, b: Float64Array, n: number, d: number): number {
  if (n < 2) throw new Error('FID needs at least 2 images per set');
  const A = meanCov(a, n, d);
  const B = meanCov(b, n, d);
  let diff = 0;
  for (let j = 0; j < d; j++) diff += (A.mean[j] - B.mean[j]) ** 2;
  const eigA = new EigenvalueDecomposition(A.cov, { assumeSymmetric: true });
  const V = eigA.eigenvectorMatrix;
  const sqrtVals = eigA.realEigenvalues.map((v) => Math.sqrt(Math.max(v, 0)));
  const sqrtA = V.mmul(Matrix.diag(sqrtVals)).mmul(V.transpose());
  const M = sqrtA.mmul(B.cov).mmul(sqrtA);
  const sym = M.add(M.transpose()).mul(0.5);
  const trSqrt = new EigenvalueDecomposition(sym, { assumeSymmetric: true }).realEigenvalues.reduce((s, v) => s + Math.sqrt(Math.max(v, 0)), 0);
  return diff + A.cov.trace() + B.cov.trace() - 2 * trSqrt;
}
