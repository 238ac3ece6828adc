import type { Value } from '../../../models/onnx/index.js';
import type { GradContext } from '../context.js';

export interface ConvGeometry {
  kernel: number[];
  strides: number[];
  pads: number[];
  dilations: number[];
  group: number;
}

export function geometry(c: GradContext, weight: Value): ConvGeometry {
  const kernel = [c.fixed(weight, 2), c.fixed(weight, 3)];
  return {
    kernel,
    strides: c.attr<number[]>('strides', [1, 1]),
    pads: c.attr<number[]>('pads', [0, 0, 0, 0]),
    dilations: c.attr<number[]>('dilations', [1, 1]),
    group: c.attr<number>('group', 1),
  };
}

/** output_padding that makes a transposed conv of `small` reproduce spatial size `big`. */
export function outputPadding(c: GradContext, big: Value, small: Value, geo: ConvGeometry): number[] {
  return [0, 1].map((i) => {
    const full = c.fixed(big, 2 + i);
    const out = c.fixed(small, 2 + i);
    return full - ((out - 1) * geo.strides[i] - geo.pads[i] - geo.pads[i + 2] + geo.dilations[i] * (geo.kernel[i] - 1) + 1);
  });
}

/**
 * Ungrouped convolutions with at least this many (in x out) channel pairs take the weight gradient
 * as one GEMM per kernel offset; smaller or grouped ones as one convolution.
 */
export const WINDOWED_WEIGHT_GRAD_MIN_CHANNELS = 64 * 64;
let windowedMin = WINDOWED_WEIGHT_GRAD_MIN_CHANNELS;

/** Tests: route every ungrouped convolution through one strategy or the other (graph-build time). */
export function setWindowedWeightGradMin(n: number = WINDOWED_WEIGHT_GRAD_MIN_CHANNELS): void {
  windowedMin = n;
}

/**
 * Weight gradient of a convolution, image [B, G*ci, H, W] and grad [B, G*co, Ho, Wo] ->
 * [G*co, ci, kh, kw]. Wide ungrouped layers (the CNN and GAN cores): for each kernel offset, the
 * strided window of the padded image that met that weight, times grad, as one well-shaped GEMM
 * (M = co, N = ci, K = B*Ho*Wo). Otherwise one convolution with the batch as the channel axis.
 */
export function convWeightGrad(c: GradContext, image: Value, grad: Value, geo: ConvGeometry): Value {
  const G = geo.group;
  const ciAll = c.fixed(image, 1);
  const coAll = c.fixed(grad, 1);
  if (G === 1 && ciAll * coAll >= windowedMin) return windowedWeightGrad(c, image, grad, geo);
  const ci = c.fixed(image, 1) / G;
  const co = c.fixed(grad, 1) / G;
  const [H, W] = [c.fixed(image, 2), c.fixed(image, 3)];
  const [Ho, Wo] = [c.fixed(grad, 2), c.fixed(grad, 3)];
  const img = c.op('Reshape', [c.op('Transpose', [c.op('Reshape', [image, c.ints([-1, G, ci, H, W])])], { perm: [2, 1, 0, 3, 4] }), c.ints([ci, -1, H, W])]);
  const ker = c.op('Reshape', [c.op('Transpose', [c.op('Reshape', [grad, c.ints([-1, G, co, Ho, Wo])])], { perm: [1, 2, 0, 3, 4] }), c.ints([G * co, -1, Ho, Wo])]);
  const r = c.op('Conv', [img, ker], { strides: geo.dilations, dilations: geo.strides, pads: geo.pads, group: G });
  const cropped = c.op('Slice', [r, c.ints([0, 0]), c.ints(geo.kernel), c.ints([2, 3])]);
  return c.op('Transpose', [cropped], { perm: [1, 0, 2, 3] });
}

/** dW[co, ci, kh, kw] = sum over b, oh, ow of grad[b, co, oh, ow] * padded[b, ci, oh*s + kh*d, ow*s + kw*d]. */
function windowedWeightGrad(c: GradContext, image: Value, grad: Value, geo: ConvGeometry): Value {
  const ci = c.fixed(image, 1);
  const co = c.fixed(grad, 1);
  const [Ho, Wo] = [c.fixed(grad, 2), c.fixed(grad, 3)];
  const [kh, kw] = geo.kernel;
  const [sh, sw] = geo.strides;
  const [dh, dw] = geo.dilations;
  const [pt, pl, pb, pr] = geo.pads;
  // Channels first once, so every window is already [ci, B*Ho*Wo] after a reshape.
  let img = c.op('Transpose', [image], { perm: [1, 0, 2, 3] });
  if (pt || pl || pb || pr) img = c.op('Pad', [img, c.ints([0, 0, pt, pl, 0, 0, pb, pr])], { mode: 'constant' });
  const g2 = c.op('Reshape', [c.op('Transpose', [grad], { perm: [1, 0, 2, 3] }), c.ints([co, -1])]);
  const per: Value[] = [];
  for (let i = 0; i < kh; i++)
    for (let j = 0; j < kw; j++) {
      const win = c.op('Slice', [img, c.ints([i * dh, j * dw]), c.ints([i * dh + (Ho - 1) * sh + 1, j * dw + (Wo - 1) * sw + 1]), c.ints([2, 3]), c.ints([sh, sw])]);
      const prod = c.op('Gemm', [g2, c.op('Reshape', [win, c.ints([ci, -1])])], { transB: 1 });
      per.push(c.op('Unsqueeze', [prod, c.ints([0])]));
    }
  const stacked = per.length === 1 ? per[0] : c.op('Concat', per, { axis: 0 });
  return c.op('Transpose', [c.op('Reshape', [stacked, c.ints([kh, kw, co, ci])])], { perm: [2, 3, 0, 1] });
}
