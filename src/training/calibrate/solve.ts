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

/** What every refit needs from the sums: the bundle's scaling and the means the fit centres with. */
interface Moments {
  stdScale: Float32Array;
  pixelMean: number;
  pixelStd: number;
  /** Per-neuron mean of raw responses. */
  mx: Float64Array;
  /** Per-pixel mean of the (grey, not z-scored) stimuli. */
  my: Float64Array;
  meanScaled: Float64Array;
  meanImage: Float64Array;
}

function moments(s: RidgeStatistics, scaling: ResponseScaling): Moments {
  const N = s.neurons;
  const P = s.pixels;
  const n = s.weight;
  if (!(n > 0)) throw new RangeError('no calibration frames to fit');
  const mx = Float64Array.from(s.sx, (v) => v / n);
  const std = Float32Array.from(mx, (m, i) => Math.sqrt(Math.max(0, s.xxDiagonal[i] / n - m * m)));
  const stdScale = responseScaleVector(std, scaling);
  const pixelMean = s.sy.reduce((a, v) => a + v, 0) / (n * P);
  const pixelStd = Math.sqrt(Math.max(1e-12, s.syy / (n * P) - pixelMean * pixelMean));
  const my = Float64Array.from(s.sy, (v) => v / n);
  return {
    stdScale,
    pixelMean,
    pixelStd,
    mx,
    my,
    meanScaled: Float64Array.from(mx, (m, i) => m * stdScale[i]),
    meanImage: Float64Array.from(my, (m) => (m - pixelMean) / pixelStd),
  };
}

/** A ridge fit from calibration statistics: held-out MSE per lambda (choosing alpha), then the weights. */
export interface RidgeSolver {
  readonly stdScale: Float32Array;
  readonly pixelMean: number;
  readonly pixelStd: number;
  /** Mean of the centred, scaled Gram matrix's diagonal: lambda = alpha x this. */
  readonly meanDiagonal: number;
  /** 'primal' (neurons x neurons) or 'sample' (frames x frames). */
  readonly form: 'primal' | 'sample';
  heldOutMse(gemm: Gemm, lambda: number, held: HeldOut, targets: Float32Array): Promise<number>;
  fit(gemm: Gemm, lambda: number, alpha?: number): Promise<CalibratedRidge>;
}

/**
 * The solver for these statistics: in sample space while they hold fewer frames than neurons (the
 * frames are kept then), in the neurons' space otherwise. Both give the same fit.
 */
export async function solverFor(gemm: Gemm, s: RidgeStatistics, scaling: ResponseScaling = 'brainreader'): Promise<RidgeSolver> {
  if (s.rows) return SampleSpaceSolver.create(gemm, s, scaling);
  await s.ensureGram(gemm);
  return new StatisticsSolver(s, scaling);
}

/** Intercept of a fit: the mean image minus the mean scaled responses through the weights. */
function interceptOf(m: Moments, weights: Float32Array, N: number, P: number): Float32Array {
  const bias = new Float32Array(P);
  for (let p = 0; p < P; p++) {
    let v = m.meanImage[p];
    for (let i = 0; i < N; i++) v -= m.meanScaled[i] * weights[i * P + p];
    bias[p] = v;
  }
  return bias;
}

/**
 * The fit in sample space (kernel form): with Z the weighted, centred, scaled frames [frames,
 * neurons] and V their centred z-scored stimuli, the primal solution (Z^T Z + lambda I)^-1 Z^T V
 * equals Z^T (Z Z^T + lambda I)^-1 V, whose system is frames x frames.
 */
export class SampleSpaceSolver implements RidgeSolver {
  readonly form = 'sample';
  readonly stdScale: Float32Array;
  readonly pixelMean: number;
  readonly pixelStd: number;
  private heldKernel?: { held: HeldOut; k: Float64Array };
  private factored?: { lambda: number; chol: Awaited<ReturnType<typeof cholesky>> };

  private constructor(
    private readonly s: RidgeStatistics,
    private readonly m: Moments,
    /** [frames, neurons] */
    private readonly z: Float32Array,
    /** [frames, pixels] */
    private readonly v: Float32Array,
    /** [frames, frames] */
    private readonly kernel: Float64Array,
    private readonly count: number,
    readonly meanDiagonal: number,
  ) {
    this.stdScale = m.stdScale;
    this.pixelMean = m.pixelMean;
    this.pixelStd = m.pixelStd;
  }

  static async create(gemm: Gemm, s: RidgeStatistics, scaling: ResponseScaling): Promise<SampleSpaceSolver> {
    const rows = s.rows;
    if (!rows) throw new RangeError('the statistics keep no frames (more frames than neurons): use the primal solver');
    const m = moments(s, scaling);
    const N = s.neurons;
    const P = s.pixels;
    const n = rows.length;
    const z = new Float32Array(n * N);
    const v = new Float32Array(n * P);
    rows.forEach((r, a) => {
      const sw = Math.sqrt(r.w);
      for (let i = 0; i < N; i++) z[a * N + i] = sw * (r.raw[i] - m.mx[i]) * m.stdScale[i];
      for (let p = 0; p < P; p++) v[a * P + p] = (sw * (r.image[p] - m.my[p])) / m.pixelStd;
    });
    const kernel = Float64Array.from(await gemm.mul(z, z, n, N, n, false, true));
    let trace = 0;
    for (let a = 0; a < n; a++) trace += kernel[a * n + a];
    return new SampleSpaceSolver(s, m, z, v, kernel, n, trace / N);
  }

  private async factor(gemm: Gemm, lambda: number): Promise<Awaited<ReturnType<typeof cholesky>>> {
    if (this.factored?.lambda === lambda) return this.factored.chol;
    const n = this.count;
    const g = Float64Array.from(this.kernel);
    for (let a = 0; a < n; a++) g[a * n + a] += lambda;
    const chol = await cholesky(gemm, g, n);
    this.factored = { lambda, chol };
    return chol;
  }

  async heldOutMse(gemm: Gemm, lambda: number, held: HeldOut, targets: Float32Array): Promise<number> {
    const N = this.s.neurons;
    const P = this.s.pixels;
    const n = this.count;
    const h = held.count;
    if (this.heldKernel?.held !== held) {
      const xh = new Float32Array(h * N);
      for (let r = 0; r < h; r++) for (let i = 0; i < N; i++) xh[r * N + i] = held.raw[r * N + i] * this.m.stdScale[i] - this.m.meanScaled[i];
      // [n, h]: the held-out frames against every calibration frame.
      this.heldKernel = { held, k: Float64Array.from(await gemm.mul(this.z, xh, n, N, h, false, true)) };
    }
    const coef = await choleskySolve(gemm, await this.factor(gemm, lambda), this.heldKernel.k, n, h);
    const pred = await gemm.mul(Float32Array.from(coef), this.v, h, n, P, true, false);
    let mse = 0;
    for (let k = 0; k < pred.length; k++) mse += (pred[k] + this.m.meanImage[k % P] - targets[k]) ** 2 / pred.length;
    return mse;
  }

  async fit(gemm: Gemm, lambda: number, alpha = lambda / this.meanDiagonal): Promise<CalibratedRidge> {
    const N = this.s.neurons;
    const P = this.s.pixels;
    const dual = await choleskySolve(gemm, await this.factor(gemm, lambda), Float64Array.from(this.v), this.count, P);
    const weights = await gemm.mul(this.z, Float32Array.from(dual), N, this.count, P, true, false);
    return { weights, bias: interceptOf(this.m, weights, N, P), stdScale: this.m.stdScale, pixelMean: this.m.pixelMean, pixelStd: this.m.pixelStd, alpha, lambda };
  }
}

/**
 * The closed-form fit a batch ridge makes on the same frames (training/ridge: responses std-scaled per
 * neuron, pixels z-scored with their scalar mean and std, both centred, lambda = alpha x mean of the
 * Gram's diagonal), computed from the sums alone (frames still pending in them are not in the fit:
 * flush first). Lambdas are returned by the solver per alpha.
 */
export class StatisticsSolver implements RidgeSolver {
  readonly form = 'primal';
  readonly stdScale: Float32Array;
  readonly pixelMean: number;
  readonly pixelStd: number;
  private readonly gram: Float64Array;
  private readonly cross: Float64Array;
  private readonly meanScaled: Float64Array;
  private readonly meanImage: Float64Array;
  private readonly m: Moments;
  readonly meanDiagonal: number;

  constructor(
    readonly s: RidgeStatistics,
    scaling: ResponseScaling = 'brainreader',
  ) {
    const N = s.neurons;
    const P = s.pixels;
    const n = s.weight;
    if (!s.gramCurrent) throw new RangeError('the neurons x neurons sums are not up to date: ensureGram() first (or solverFor)');
    this.m = moments(s, scaling);
    const { mx, my } = this.m;
    this.stdScale = this.m.stdScale;
    this.pixelMean = this.m.pixelMean;
    this.pixelStd = this.m.pixelStd;
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
    this.cross = new Float64Array(N * P);
    for (let i = 0; i < N; i++) for (let p = 0; p < P; p++) this.cross[i * P + p] = (sc[i] * (s.xy[i * P + p] - n * mx[i] * my[p])) / this.pixelStd;
    this.meanScaled = this.m.meanScaled;
    this.meanImage = this.m.meanImage;
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
    return { weights, bias: interceptOf(this.m, weights, N, P), stdScale: this.stdScale, pixelMean: this.pixelMean, pixelStd: this.pixelStd, alpha, lambda };
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
export async function chooseAlpha(gemm: Gemm, solver: RidgeSolver, alphas: readonly number[], held: HeldOut): Promise<AlphaChoice> {
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
