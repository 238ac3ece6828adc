import type { GradRule } from '../context.js';

export const subGrad: GradRule = {
  opType: 'Sub',
  grad: (c) => [c.needs[0] ? c.dy : undefined, c.needs[1] ? c.op('Neg', [c.dy]) : undefined],
};
