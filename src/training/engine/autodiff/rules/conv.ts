import type { GradRule } from '../context.js';
import { convWeightGrad, geometry, outputPadding } from './conv-util.js';

/** dX is the transposed convolution of dy with the same weight; dW a convolution of X with dy. */
export const convGrad: GradRule = {
  opType: 'Conv',
  grad: (c) => {
    const [x, w] = [c.x(0), c.x(1)];
    const geo = geometry(c, w);
    const dx = c.needs[0]
      ? c.op('ConvTranspose', [c.dy, w], {
          kernel_shape: geo.kernel,
          strides: geo.strides,
          pads: geo.pads,
          dilations: geo.dilations,
          group: geo.group,
          output_padding: outputPadding(c, x, c.dy, geo),
        })
      : undefined;
    const dw = c.needs[1] ? convWeightGrad(c, x, c.dy, geo) : undefined;
    const db = c.inputs[2] && c.needs[2] ? c.op('ReduceSum', [c.dy, c.ints([0, 2, 3])], { keepdims: 0 }) : undefined;
    return [dx, dw, db];
  },
};
