import type { GradRule } from '../context.js';

/** y = a/b: da = dy/b, db = -dy*y/b. */
export const divGrad: GradRule = {
  opType: 'Div',
  grad: (c) => [
    c.needs[0] ? c.op('Div', [c.dy, c.x(1)]) : undefined,
    c.needs[1] ? c.op('Neg', [c.op('Div', [c.op('Mul', [c.dy, c.y]), c.x(1)])]) : undefined,
  ],
};
