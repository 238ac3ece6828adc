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
}

export const DEFAULT_ALPHAS = [0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100, 300];

/**
 * Closed-form ridge regression from std-scaled responses to z-scored pixels, with an intercept
 * (responses and pixels centred on train means). Uses the dual form (n x n Gram) when trials are
 * fewer than neurons, the primal (neurons x neurons) otherwise. Regularisation lambda = alpha *
 * mean(diag(Gram)) is chosen by validation-tier pixel MSE, the objective ridge itself minimises.
 */
export async function fitRidge(data: PreparedData, opts: { alphas?: number[]; log?: (s: string) => void } = {}): Promise<RidgeResult> {
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
  return { graph: buildRidgeGraph(W, bias, N, data.height, data.width), weights: W, bias, lambda: best!.lambda, alpha: best!.alpha, path, seconds: (Date.now() - t0) / 1000 };
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
