import { responseScaleVector, type ResponseScaling } from '../../common/scaling.js';
import { cholesky, choleskySolve, type Gemm } from '../engine/linalg.js';
import { scoreImages, type ImageScores } from '../eval/metrics/image-metrics.js';
import type { RidgeStatistics } from './statistics.js';

/** A ridge decoder fitted from sufficient statistics, in the bundle's units. */
export interface CalibratedRidge {
  /** [neurons, pixels]: std-scaled responses -> z-scored pixels. */
  weights: Float32Array;
  bias: Float32Array;
  /** Per-neuron multiplier of raw responses (the bundle's std_scale.npy). */
  stdScale: Float32Array;
  pixelMean: number;
  pixelStd: number;
  alpha: number;
  lambda: number;
}

/** Held-out calibration frames: raw responses [count, neurons] and their stimuli [count, pixels] (grey). */
export interface HeldOut {
  count: number;
  raw: Float32Array;
  images: Float32Array;
}

/**
 * The closed-form fit a batch ridge makes on the same frames (training/ridge: responses std-scaled per
 * neuron, pixels z-scored with their scalar mean and std, both centred, lambda = alpha x mean of the
 * Gram's diagonal), computed from the sums alone (frames still pending in them are not in the fit:
 * flush first). Lambdas are returned by the solver per alpha.
 */
export class StatisticsSolver {
  readonly stdScale: Float32Array;
  readonly pixelMean: number;
  readonly pixelStd: number;
  private readonly gram: Float64Array;
  private readonly cross: Float64Array;
  private readonly meanScaled: Float64Array;
  private readonly meanImage: Float64Array;
  readonly meanDiagonal: number;

  constructor(
    readonly s: RidgeStatistics,
    scaling: ResponseScaling = 'brainreader',
  ) {
    const N = s.neurons;
    const P = s.pixels;
    const n = s.weight;
    if (!(n > 0)) throw new RangeError('no calibration frames to fit');
    const mx = Float64Array.from(s.sx, (v) => v / n);
    const std = Float32Array.from(mx, (m, i) => Math.sqrt(Math.max(0, s.xx[i * N + i] / n - m * m)));
    this.stdScale = responseScaleVector(std, scaling);
    this.pixelMean = s.sy.reduce((a, v) => a + v, 0) / (n * P);
    this.pixelStd = Math.sqrt(Math.max(1e-12, s.syy / (n * P) - this.pixelMean * this.pixelMean));
    const sc = this.stdScale;
    this.gram = new Float64Array(N * N);
    let trace = 0;
    for (let i = 0; i < N; i++)
      for (let j = 0; j <= i; j++) {
        const v = sc[i] * sc[j] * (s.xx[i * N + j] - n * mx[i] * mx[j]);
        this.gram[i * N + j] = v;
        this.gram[j * N + i] = v;
        if (i === j) trace += v;
      }
    this.meanDiagonal = trace / N;
    const my = Float64Array.from(s.sy, (v) => v / n);
    this.cross = new Float64Array(N * P);
    for (let i = 0; i < N; i++) for (let p = 0; p < P; p++) this.cross[i * P + p] = (sc[i] * (s.xy[i * P + p] - n * mx[i] * my[p])) / this.pixelStd;
    this.meanScaled = Float64Array.from(mx, (m, i) => m * sc[i]);
    this.meanImage = Float64Array.from(my, (m) => (m - this.pixelMean) / this.pixelStd);
  }

  /**
   * Held-out pixel MSE of the fit at lambda without forming its weights: the held-out rows' centred
   * responses are solved against (G + lambda I) - as many right-hand sides as held-out frames, not
   * pixels - and multiplied by the cross-covariance. Choosing among alphas this way costs one
   * Cholesky factorisation each; only the chosen fit needs the full solve.
   */
  async heldOutMse(gemm: Gemm, lambda: number, held: HeldOut, targets: Float32Array): Promise<number> {
    const N = this.s.neurons;
    const P = this.s.pixels;
    const m = held.count;
    const xt = new Float64Array(N * m);
    for (let r = 0; r < m; r++) for (let i = 0; i < N; i++) xt[i * m + r] = held.raw[r * N + i] * this.stdScale[i] - this.meanScaled[i];
    const zt = await choleskySolve(gemm, await this.factor(gemm, lambda), xt, N, m);
    this.cross32 ??= Float32Array.from(this.cross);
    const pred = await gemm.mul(Float32Array.from(zt), this.cross32, m, N, P, true, false);
    let mse = 0;
    for (let k = 0; k < pred.length; k++) mse += (pred[k] + this.meanImage[k % P] - targets[k]) ** 2 / pred.length;
    return mse;
  }

  private cross32?: Float32Array;
  private factored?: { lambda: number; chol: Awaited<ReturnType<typeof cholesky>> };

  /** Cholesky factor of G + lambda I (the last one is kept: the chosen alpha's is needed again for its weights). */
  private async factor(gemm: Gemm, lambda: number): Promise<Awaited<ReturnType<typeof cholesky>>> {
    if (this.factored?.lambda === lambda) return this.factored.chol;
    const N = this.s.neurons;
    const g = Float64Array.from(this.gram);
    for (let i = 0; i < N; i++) g[i * N + i] += lambda;
    const chol = await cholesky(gemm, g, N);
    this.factored = { lambda, chol };
    return chol;
  }

  /** The fit at an absolute regularisation lambda. */
  async fit(gemm: Gemm, lambda: number, alpha = lambda / this.meanDiagonal): Promise<CalibratedRidge> {
    const N = this.s.neurons;
    const P = this.s.pixels;
    const chol = await this.factor(gemm, lambda);
    let weights: Float32Array;
    if (N < P) {
      // Fewer neurons than pixels: the inverse (N right-hand sides) times C in one GEMM beats P triangular solves.
      const eye = new Float64Array(N * N);
      for (let i = 0; i < N; i++) eye[i * N + i] = 1;
      const inverse = await choleskySolve(gemm, chol, eye, N, N);
      this.cross32 ??= Float32Array.from(this.cross);
      weights = await gemm.mul(Float32Array.from(inverse), this.cross32, N, N, P);
    } else weights = Float32Array.from(await choleskySolve(gemm, chol, this.cross, N, P));
    const coef = weights;
    const bias = new Float32Array(P);
    for (let p = 0; p < P; p++) {
      let v = this.meanImage[p];
      for (let i = 0; i < N; i++) v -= this.meanScaled[i] * coef[i * P + p];
      bias[p] = v;
    }
    return { weights, bias, stdScale: this.stdScale, pixelMean: this.pixelMean, pixelStd: this.pixelStd, alpha, lambda };
  }
}

/** z-scored decodes [count, pixels] of held-out raw responses. */
export async function decodeHeldOut(gemm: Gemm, r: CalibratedRidge, h: HeldOut): Promise<Float32Array> {
  const N = r.stdScale.length;
  const P = r.bias.length;
  const x = Float32Array.from(h.raw, (v, k) => v * r.stdScale[k % N]);
  const out = await gemm.mul(x, r.weights, h.count, N, P);
  for (let k = 0; k < out.length; k++) out[k] += r.bias[k % P];
  return out;
}

/** Held-out targets in a fit's z-scored pixel units. */
export const heldOutTargets = (r: Pick<CalibratedRidge, 'pixelMean' | 'pixelStd'>, h: HeldOut): Float32Array => Float32Array.from(h.images, (v) => (v - r.pixelMean) / r.pixelStd);

export interface AlphaChoice {
  ridge: CalibratedRidge;
  /** Held-out MSE (z-scored pixels) per alpha tried. */
  path: { alpha: number; lambda: number; heldOutMse: number }[];
}

/**
 * Try each alpha (lambda = alpha x mean Gram diagonal), keep the one with the lowest held-out pixel
 * MSE - the objective ridge minimises, as the batch fit chooses on its validation tier.
 */
export async function chooseAlpha(gemm: Gemm, solver: StatisticsSolver, alphas: readonly number[], held: HeldOut): Promise<AlphaChoice> {
  const path: AlphaChoice['path'] = [];
  if (!held.count) {
    const alpha = alphas[0];
    return { ridge: await solver.fit(gemm, alpha * solver.meanDiagonal, alpha), path };
  }
  const targets = heldOutTargets(solver, held);
  let best: { alpha: number; mse: number } | undefined;
  for (const alpha of alphas) {
    const lambda = alpha * solver.meanDiagonal;
    const mse = await solver.heldOutMse(gemm, lambda, held, targets);
    path.push({ alpha, lambda, heldOutMse: mse });
    if (!best || mse < best.mse) best = { alpha, mse };
  }
  return { ridge: await solver.fit(gemm, best!.alpha * solver.meanDiagonal, best!.alpha), path };
}

/** SSIM, SSIML, MSE and PixCorr of z-scored decodes against held-out targets. */
export function heldOutScores(decoded: Float32Array, targets: Float32Array, count: number, height: number, width: number): ImageScores {
  const { ssim, ssiml, mse, pixcorr } = scoreImages(targets, decoded, count, height, width);
  return { ssim, ssiml, mse, pixcorr };
}
