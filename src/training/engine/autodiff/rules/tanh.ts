import type { GradRule } from '../context.js';

export const tanhGrad: GradRule = {
  opType: 'Tanh',
  grad: (c) => [c.op('Mul', [c.dy, c.op('Sub', [c.scalar(1, c.y), c.op('Mul', [c.y, c.y])])])],
};
