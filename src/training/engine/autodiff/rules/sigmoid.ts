import type { GradRule } from '../context.js';

export const sigmoidGrad: GradRule = {
  opType: 'Sigmoid',
  grad: (c) => [c.op('Mul', [c.dy, c.op('Mul', [c.y, c.op('Sub', [c.scalar(1, c.y), c.y])])])],
};
