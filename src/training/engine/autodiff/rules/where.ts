import type { GradRule } from '../context.js';

export const whereGrad: GradRule = {
  opType: 'Where',
  grad: (c) => {
    const z = c.zero(c.dy);
    return [undefined, c.needs[1] ? c.op('Where', [c.x(0), c.dy, z]) : undefined, c.needs[2] ? c.op('Where', [c.x(0), z, c.dy]) : undefined];
  },
};
