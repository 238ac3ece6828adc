import type { GradRule } from '../context.js';

/** For x <= 0, y = alpha(e^x - 1), so dy/dx = y + alpha. */
export const eluGrad: GradRule = {
  opType: 'Elu',
  grad: (c) => {
    const alpha = c.attr<number>('alpha', 1);
    const neg = c.op('Mul', [c.dy, c.op('Add', [c.y, c.scalar(alpha, c.y)])]);
    return [c.op('Where', [c.op('Greater', [c.x(0), c.zero(c.x(0))]), c.dy, neg])];
  },
};
