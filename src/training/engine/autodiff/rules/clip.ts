import type { GradRule } from '../context.js';

/** Gradient passes where min <= x <= max (bounds inclusive, as PyTorch's clamp). */
export const clipGrad: GradRule = {
  opType: 'Clip',
  grad: (c) => {
    const x = c.x(0);
    let g = c.dy;
    const lo = c.inputs[1];
    const hi = c.inputs[2];
    if (lo) g = c.op('Where', [c.op('Less', [x, lo]), c.zero(g), g]);
    if (hi) g = c.op('Where', [c.op('Greater', [x, hi]), c.zero(g), g]);
    return [g, undefined, undefined];
  },
};
