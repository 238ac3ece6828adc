import { buildRidgeGraph } from '../../models/architectures/ridge.js';
import type { Graph } from '../../models/onnx/index.js';
import type { PreparedData } from '../../datasets/preprocess.js';
import { cholesky, choleskySolve, Gemm } from '../engine/linalg.js';

export interface RidgeResult {
  graph: Graph;
  /** The fitted map, [neurons, H*W] and [H*W]: what a ridge-anchored deep decoder builds on. */
  weights: Float32Array;
  bias: Float32Array;
  /** Chosen regularisation (absolute) and its multiple of mean(diag(Gram)). */
  lambda: number;
  alpha: number;
  /** Validation MSE (z-scored pixels) for every alpha tried. */
  path: { alpha: number; lambda: number; valMse: number }[];
  seconds: number;
  /**
   * With `outOfFold`: each train trial's ridge estimate from a fit that did not see it (k folds, same
   * lambda), [n, H*W]. A deep decoder that refines the ridge image trains on these, so the errors it
   * learns to correct are the held-out errors it meets at test time, not the smaller in-sample ones.
   */
  trainOutOfFold?: Float32Array;
}

/**
 * k-fold out-of-fold estimates. `groups` (one per train row) keeps a group in one fold: where train
 * stimuli are crops of a few photos and validation's come from another photo (cortexcast synth),
 * folds by row would predict a crop from its neighbours and understate the held-out error.
 */
export interface OutOfFold {
  folds: number;
  groups?: readonly number[];
}

export const DEFAULT_ALPHAS = [0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300];

/**
 * Closed-form ridge regression from std-scaled responses to z-scored pixels, with an intercept
 * (responses and pixels centred on train means). Uses the dual form (n x n Gram) when trials are
 * fewer than neurons, the primal (neurons x neurons) otherwise. Regularisation lambda = alpha *
 * mean(diag(Gram)) is chosen by validation-tier pixel MSE, the objective ridge itself minimises.
 */
export async function fitRidge(data: PreparedData, opts: { alphas?: number[]; outOfFold?: OutOfFold; log?: (s: string) => void } = {}): Promise<RidgeResult> {
  const t0 = Date.now();
  const log = opts.log ?? (() => undefined);
  const gemm = await Gemm.create();
  const { train, validation } = data;
  const n = train.count;
  const N = data.neurons;
  const P = data.height * data.width;
  const meanX = colMeans(train.responses, n, N);
  const meanY = colMeans(train.images, n, P);
  const X = center(train.responses, meanX, n, N);
  const Y = center(train.images, meanY, n, P);
  const Xv = center(validation.responses, meanX, validation.count, N);
  const dual = n < N;
  const dim = dual ? n : N;
  log(`ridge: ${dual ? 'dual' : 'primal'} form, ${n} train trials, ${N} neurons, ${P} pixels`);
  const gram = Float64Array.from(dual ? await gemm.mul(X, X, n, N, n, false, true) : await gemm.mul(X, X, N, n, N, true, false));
  const rhs = dual ? Float64Array.from(Y) : Float64Array.from(await gemm.mul(X, Y, N, n, P, true, false));
  // For validation predictions: dual -> Xv X^T A, primal -> Xv W.
  const kv = dual ? await gemm.mul(Xv, X, validation.count, N, n, false, true) : undefined;
  let diag = 0;
  for (let i = 0; i < dim; i++) diag += gram[i * dim + i] / dim;
  const alphas = opts.alphas ?? DEFAULT_ALPHAS;
  const path: RidgeResult['path'] = [];
  let best: { alpha: number; lambda: number; valMse: number; coef: Float64Array } | undefined;
  const Yv = center(validation.images, meanY, validation.count, P);
  for (const alpha of alphas) {
    const lambda = alpha * diag;
    const g = Float64Array.from(gram);
    for (let i = 0; i < dim; i++) g[i * dim + i] += lambda;
    const coef = await choleskySolve(gemm, await cholesky(gemm, g, dim), rhs, dim, P);
    const pred = dual ? await gemm.mul(kv!, coef, validation.count, n, P) : await gemm.mul(Xv, coef, validation.count, N, P);
    let mse = 0;
    for (let i = 0; i < pred.length; i++) mse += (pred[i] - Yv[i]) ** 2 / pred.length;
    path.push({ alpha, lambda, valMse: mse });
    log(`ridge: alpha ${alpha} -> validation MSE ${mse.toFixed(4)}`);
    if (!best || mse < best.valMse) best = { alpha, lambda, valMse: mse, coef };
  }
  const W = dual ? await gemm.mul(X, best!.coef, N, n, P, true, false) : Float32Array.from(best!.coef);
  // Intercept: b = meanY - meanX W.
  const mw = await gemm.mul(Float32Array.from(meanX), W, 1, N, P);
  const bias = Float32Array.from(meanY, (v, i) => v - mw[i]);
  let trainOutOfFold: Float32Array | undefined;
  if (opts.outOfFold) {
    const { fold, folds } = foldOfRows(n, opts.outOfFold);
    trainOutOfFold = dual
      ? await outOfFoldPredictions(gemm, gram, Y, meanY, n, P, best!.lambda, fold, folds)
      : await outOfFoldPrimal(gemm, { X, Y, gram, rhs, meanY, n, N, P }, best!.lambda, fold, folds);
    log(`ridge: ${folds}-fold out-of-fold train estimates${opts.outOfFold.groups ? ' (folds by stimulus group)' : ''}, lambda ${best!.lambda.toPrecision(4)}`);
  }
  return { graph: buildRidgeGraph(W, bias, N, data.height, data.width), weights: W, bias, lambda: best!.lambda, alpha: best!.alpha, path, seconds: (Date.now() - t0) / 1000, trainOutOfFold };
}

/** Fold index of every train row: by row, or by group (groups dealt to folds in order of first appearance). */
function foldOfRows(n: number, o: OutOfFold): { fold: number[]; folds: number } {
  if (o.groups && o.groups.length !== n) throw new RangeError(`out-of-fold ridge: ${o.groups.length} groups for ${n} train trials`);
  const distinct = o.groups ? [...new Set(o.groups)] : undefined;
  const folds = Math.min(o.folds, distinct?.length ?? n);
  if (!(Number.isInteger(folds) && folds >= 2)) throw new RangeError(`out-of-fold ridge: ${o.folds} folds over ${distinct ? `${distinct.length} stimulus groups` : `${n} train trials`}`);
  if (!distinct) return { fold: Array.from({ length: n }, (_, i) => i % folds), folds };
  const rank = new Map(distinct.map((g, k) => [g, k % folds]));
  return { fold: o.groups!.map((g) => rank.get(g)!), folds };
}

/**
 * Kernel-form k-fold predictions: the rows of fold f are predicted by the ridge fitted on the other
 * folds, K_HT (K_TT + lambda I)^-1 Y_T, every block cut from the one n x n kernel.
 */
async function outOfFoldPredictions(gemm: Gemm, kernel: Float64Array, Y: Float32Array, meanY: Float64Array, n: number, P: number, lambda: number, fold: number[], folds: number): Promise<Float32Array> {
  const out = new Float32Array(n * P);
  for (let f = 0; f < folds; f++) {
    const held: number[] = [];
    const kept: number[] = [];
    for (let i = 0; i < n; i++) (fold[i] === f ? held : kept).push(i);
    const t = kept.length;
    const ktt = new Float64Array(t * t);
    for (let a = 0; a < t; a++) for (let b = 0; b < t; b++) ktt[a * t + b] = kernel[kept[a] * n + kept[b]] + (a === b ? lambda : 0);
    const yt = new Float64Array(t * P);
    kept.forEach((row, a) => yt.set(Y.subarray(row * P, (row + 1) * P), a * P));
    const coef = await choleskySolve(gemm, await cholesky(gemm, ktt, t), yt, t, P);
    const kht = new Float32Array(held.length * t);
    held.forEach((row, a) => kept.forEach((col, b) => (kht[a * t + b] = kernel[row * n + col])));
    const pred = await gemm.mul(kht, coef, held.length, t, P);
    held.forEach((row, a) => {
      for (let j = 0; j < P; j++) out[row * P + j] = pred[a * P + j] + meanY[j];
    });
  }
  return out;
}

/**
 * The same k-fold predictions in the neurons' space, for more trials than neurons: each fold's fit
 * is (G - X_f^T X_f + lambda I)^-1 (X^T Y - X_f^T Y_f), neurons x neurons per fold instead of an
 * (n - n_f)^2 kernel (at 15,000 trials and 2,000 neurons, seconds instead of a quarter of an hour).
 */
async function outOfFoldPrimal(
  gemm: Gemm,
  d: { X: Float32Array; Y: Float32Array; gram: Float64Array; rhs: Float64Array; meanY: Float64Array; n: number; N: number; P: number },
  lambda: number,
  fold: number[],
  folds: number,
): Promise<Float32Array> {
  const { X, Y, gram, rhs, meanY, n, N, P } = d;
  const out = new Float32Array(n * P);
  for (let f = 0; f < folds; f++) {
    const held: number[] = [];
    for (let i = 0; i < n; i++) if (fold[i] === f) held.push(i);
    const m = held.length;
    const xf = new Float32Array(m * N);
    const yf = new Float32Array(m * P);
    held.forEach((row, a) => (xf.set(X.subarray(row * N, (row + 1) * N), a * N), yf.set(Y.subarray(row * P, (row + 1) * P), a * P)));
    const gf = await gemm.mul(xf, xf, N, m, N, true, false);
    const g = new Float64Array(N * N);
    for (let k = 0; k < g.length; k++) g[k] = gram[k] - gf[k];
    for (let i = 0; i < N; i++) g[i * N + i] += lambda;
    const cf = await gemm.mul(xf, yf, N, m, P, true, false);
    const b = new Float64Array(N * P);
    for (let k = 0; k < b.length; k++) b[k] = rhs[k] - cf[k];
    const coef = await choleskySolve(gemm, await cholesky(gemm, g, N), b, N, P);
    const pred = await gemm.mul(xf, Float32Array.from(coef), m, N, P);
    held.forEach((row, a) => {
      for (let j = 0; j < P; j++) out[row * P + j] = pred[a * P + j] + meanY[j];
    });
  }
  return out;
}

function colMeans(m: Float32Array, rows: number, cols: number): Float64Array {
  const out = new Float64Array(cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c] += m[r * cols + c];
  return out.map((v) => v / rows);
}

function center(m: Float32Array, mean: Float64Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[r * cols + c] = m[r * cols + c] - mean[c];
  return out;
}
