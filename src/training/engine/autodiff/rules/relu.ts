import type { GradRule } from '../context.js';

/** NOTE: the gradient at x = 0 is 0 (PyTorch's convention). */
export const reluGrad: GradRule = {
  opType: 'Relu',
  grad: (c) => [c.op('Where', [c.op('Greater', [c.x(0), c.zero(c.x(0))]), c.dy, c.zero(c.dy)])],
};
