import type { GradRule } from '../context.js';

export const mulGrad: GradRule = {
  opType: 'Mul',
  grad: (c) => [c.needs[0] ? c.op('Mul', [c.dy, c.x(1)]) : undefined, c.needs[1] ? c.op('Mul', [c.dy, c.x(0)]) : undefined],
};
