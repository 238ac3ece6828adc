import type { GradRule } from '../context.js';

export const sqrtGrad: GradRule = {
  opType: 'Sqrt',
  grad: (c) => [c.op('Div', [c.op('Mul', [c.dy, c.scalar(0.5, c.dy)]), c.y])],
};
