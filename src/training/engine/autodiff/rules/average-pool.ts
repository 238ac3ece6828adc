import { tensor } from '../../../../models/onnx/index.js';
import type { GradRule } from '../context.js';
import { outputPadding } from './conv-util.js';

/**
 * Each output spreads dy/count evenly over its window: a depthwise transposed convolution with a
 * ones kernel. Without count_include_pad the count differs at padded borders, so it is a constant map.
 */
export const averagePoolGrad: GradRule = {
  opType: 'AveragePool',
  grad: (c) => {
    const x = c.x(0);
    const C = c.fixed(x, 1);
    const kernel = c.attr<number[]>('kernel_shape');
    const strides = c.attr<number[]>('strides', [1, 1]);
    const pads = c.attr<number[]>('pads', [0, 0, 0, 0]);
    const includePad = c.attr<number>('count_include_pad', 0) === 1;
    const [H, W] = [c.fixed(x, 2), c.fixed(x, 3)];
    const [Ho, Wo] = [c.fixed(c.y, 2), c.fixed(c.y, 3)];
    const counts = new Float64Array(Ho * Wo);
    for (let oy = 0; oy < Ho; oy++)
      for (let ox = 0; ox < Wo; ox++) {
        const y0 = oy * strides[0] - pads[0];
        const x0 = ox * strides[1] - pads[1];
        const inY = Math.min(H, y0 + kernel[0]) - Math.max(0, y0);
        const inX = Math.min(W, x0 + kernel[1]) - Math.max(0, x0);
        counts[oy * Wo + ox] = includePad ? kernel[0] * kernel[1] : inY * inX;
      }
    const inv = c.g.initializer('pool_inv_count', tensor(x.dtype, [Ho, Wo], Array.from(counts, (n) => 1 / n)));
    const ones = c.g.initializer('pool_ones', tensor(x.dtype, [C, 1, kernel[0], kernel[1]], new Array(C * kernel[0] * kernel[1]).fill(1)));
    const geo = { kernel, strides, pads, dilations: [1, 1], group: C };
    return [
      c.op('ConvTranspose', [c.op('Mul', [c.dy, inv]), ones], {
        kernel_shape: kernel,
        strides,
        pads,
        group: C,
        output_padding: outputPadding(c, x, c.dy, geo),
      }),
    ];
  },
};
