import type { GradRule } from '../context.js';

/** Elementwise Max/Min of two inputs; ties send the gradient to the first input. */
const pick = (opType: 'Max' | 'Min'): GradRule => ({
  opType,
  grad: (c) => {
    const first = c.op(opType === 'Max' ? 'GreaterOrEqual' : 'LessOrEqual', [c.x(0), c.x(1)]);
    const z = c.zero(c.dy);
    return [c.needs[0] ? c.op('Where', [first, c.dy, z]) : undefined, c.needs[1] ? c.op('Where', [first, z, c.dy]) : undefined];
  },
});
export const maxGrad = pick('Max');
export const minGrad = pick('Min');
