import type { Value } from '../../../../models/onnx/index.js';
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
 * Weight gradient of a (grouped) convolution as one more convolution: the batch becomes the channel
 * axis, `grad` becomes the kernel, and stride and dilation swap roles.
 * image [B, G*ci, H, W], grad [B, G*co, Ho, Wo] -> [G*co, ci, kh, kw].
 */
export function convWeightGrad(c: GradContext, image: Value, grad: Value, geo: ConvGeometry): Value {
  const G = geo.group;
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
