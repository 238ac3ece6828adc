import { type Value, tensor } from '../../models/onnx/index.js';
import { reduce, scalar, type LayerContext } from '../../models/layers.js';
import { gaussianWindow1d, SSIM_RADIUS } from '../eval/metrics/image-metrics.js';

/**
 * Training losses as graph functions (differentiable through the autodiff rules). Images are
 * [batch, 1, H, W]; every loss returns a scalar.
 */
const mean = (ctx: LayerContext, x: Value): Value => reduce(ctx, 'ReduceMean', x, x.shape.map((_, i) => i), false);

export function mseLoss(ctx: LayerContext, pred: Value, target: Value): Value {
  const d = ctx.g.op('Sub', [pred, target]);
  return mean(ctx, ctx.g.op('Mul', [d, d]));
}

export function maeLoss(ctx: LayerContext, pred: Value, target: Value): Value {
  return mean(ctx, ctx.g.op('Abs', [ctx.g.op('Sub', [pred, target])]));
}

/** PyTorch's PoissonNLLLoss(log_input=False): mean(pred - target * log(pred + 1e-8)). */
export function poissonLoss(ctx: LayerContext, pred: Value, target: Value): Value {
  return mean(ctx, poissonNll(ctx, pred, target));
}

/** Element-wise Poisson negative log-likelihood, pred - target * log(pred + 1e-8) (the encoder sums it). */
export function poissonNll(ctx: LayerContext, pred: Value, target: Value): Value {
  const { g } = ctx;
  return g.op('Sub', [pred, g.op('Mul', [target, g.op('Log', [g.op('Add', [pred, scalar(g, 'eps', 1e-8)])])])]);
}

/** Per-image min-max scaling to [0, 1] (eps 1e-8), as the report's metrics do, differentiably. */
export function minMaxScale(ctx: LayerContext, x: Value): Value {
  const { g } = ctx;
  const axes = x.shape.slice(1).map((_, i) => i + 1);
  const lo = reduce(ctx, 'ReduceMin', x, axes);
  const hi = reduce(ctx, 'ReduceMax', x, axes);
  return g.op('Div', [g.op('Sub', [x, lo]), g.op('Add', [g.op('Sub', [hi, lo]), scalar(g, 'eps', 1e-8)])]);
}

/**
 * Mean SSIM of image pairs, the report's definition: 11x11 Gaussian window (sigma 1.5) applied as a
 * fixed convolution in 'valid' mode, population covariance, data range 1; each image min-max scaled
 * first unless minMax is false.
 */
export function ssimValue(ctx: LayerContext, pred: Value, target: Value, opts: { minMax?: boolean; dataRange?: number } = {}): Value {
  const { g } = ctx;
  const [x, y] = opts.minMax === false ? [pred, target] : [minMaxScale(ctx, pred), minMaxScale(ctx, target)];
  const w1 = gaussianWindow1d();
  const k = 2 * SSIM_RADIUS + 1;
  const win = new Float32Array(k * k);
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) win[i * k + j] = w1[i] * w1[j];
  const kernel = g.initializer('ssim_window', tensor('float32', [1, 1, k, k], win));
  const filt = (v: Value): Value => g.op('Conv', [v, kernel], { kernel_shape: [k, k] });
  const mul = (a: Value, b: Value): Value => g.op('Mul', [a, b]);
  const ux = filt(x);
  const uy = filt(y);
  const vx = g.op('Sub', [filt(mul(x, x)), mul(ux, ux)]);
  const vy = g.op('Sub', [filt(mul(y, y)), mul(uy, uy)]);
  const vxy = g.op('Sub', [filt(mul(x, y)), mul(ux, uy)]);
  const R = opts.dataRange ?? 1;
  const c1 = scalar(g, 'c1', (0.01 * R) ** 2);
  const c2 = scalar(g, 'c2', (0.03 * R) ** 2);
  const two = scalar(g, 'two', 2);
  const num = mul(g.op('Add', [mul(two, mul(ux, uy)), c1]), g.op('Add', [mul(two, vxy), c2]));
  const den = mul(g.op('Add', [g.op('Add', [mul(ux, ux), mul(uy, uy)]), c1]), g.op('Add', [g.op('Add', [vx, vy]), c2]));
  return mean(ctx, g.op('Div', [num, den]));
}

/** SSIML = (1 - SSIM) / 2. */
export function ssimLoss(ctx: LayerContext, pred: Value, target: Value): Value {
  const { g } = ctx;
  return g.op('Mul', [g.op('Sub', [scalar(g, 'one', 1), ssimValue(ctx, pred, target)]), scalar(g, 'half', 0.5)]);
}

/** Log-SSIM loss = -log((SSIM + 1) / 2 + 1e-6). */
export function logSsimLoss(ctx: LayerContext, pred: Value, target: Value): Value {
  const { g } = ctx;
  const s = ssimValue(ctx, pred, target);
  return g.op('Neg', [g.op('Log', [g.op('Add', [g.op('Mul', [g.op('Add', [s, scalar(g, 'one', 1)]), scalar(g, 'half', 0.5)]), scalar(g, 'eps', 1e-6)])])]);
}

/**
 * Least-squares GAN term: mean((D - label)^2). Labels are a graph input so the trainer can draw the
 * report's noisy labels each step (U[0.95, 1] real, U[0, 0.05] fake) or pass constants.
 */
export function lsganLoss(ctx: LayerContext, score: Value, label: Value): Value {
  return mseLoss(ctx, score, label);
}

/**
 * MSE + log-SSIM, unweighted (z-scored pixels: both terms are O(1) at the ridge image). Where one
 * objective alone trades the other metric away (log-SSIM raised a refiner's validation SSIM and
 * its MSE with it, docs/bench), the sum asks for both.
 */
export function mseLogSsimLoss(ctx: LayerContext, pred: Value, target: Value): Value {
  return ctx.g.op('Add', [mseLoss(ctx, pred, target), logSsimLoss(ctx, pred, target)]);
}

export type LossName = 'mse' | 'mae' | 'ssim' | 'logssim' | 'mse+logssim' | 'poisson';
export const LOSSES: Record<LossName, (ctx: LayerContext, pred: Value, target: Value) => Value> = {
  mse: mseLoss,
  mae: maeLoss,
  ssim: ssimLoss,
  logssim: logSsimLoss,
  'mse+logssim': mseLogSsimLoss,
  poisson: poissonLoss,
};

