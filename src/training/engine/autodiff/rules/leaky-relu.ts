import type { GradRule } from '../context.js';

export const leakyReluGrad: GradRule = {
  opType: 'LeakyRelu',
  grad: (c) => {
    const alpha = c.attr<number>('alpha', 0.01);
    return [c.op('Where', [c.op('Greater', [c.x(0), c.zero(c.x(0))]), c.dy, c.op('Mul', [c.dy, c.scalar(alpha, c.dy)])])];
  },
};
