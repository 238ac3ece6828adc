import type { GradRule } from '../context.js';
import { convWeightGrad, geometry } from './conv-util.js';

/**
 * Y = convT(X, W): dX = conv(dy, W) with the same geometry (W's [in, out/G, k, k] layout is exactly
 * the conv weight that maps dy's channels back to X's); dW = the conv weight gradient with dy as
 * the image and X as the gradient.
 */
export const convTransposeGrad: GradRule = {
  opType: 'ConvTranspose',
  grad: (c) => {
    const w = c.x(1);
    const geo = geometry(c, w);
    const dx = c.needs[0]
      ? c.op('Conv', [c.dy, w], { kernel_shape: geo.kernel, strides: geo.strides, pads: geo.pads, dilations: geo.dilations, group: geo.group })
      : undefined;
    const dw = c.needs[1] ? convWeightGrad(c, c.dy, c.x(0), geo) : undefined;
    const db = c.inputs[2] && c.needs[2] ? c.op('ReduceSum', [c.dy, c.ints([0, 2, 3])], { keepdims: 0 }) : undefined;
    return [dx, dw, db];
  },
};
