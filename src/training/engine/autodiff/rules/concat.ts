import type { GradRule } from '../context.js';

export const concatGrad: GradRule = {
  opType: 'Concat',
  grad: (c) => {
    const r = c.y.shape.length;
    const axis = ((a) => (a < 0 ? a + r : a))(c.attr<number>('axis'));
    let at = 0;
    return c.inputs.map((v, i) => {
      const size = c.fixed(v!, axis);
      const g = c.needs[i] ? c.op('Slice', [c.dy, c.ints([at]), c.ints([at + size]), c.ints([axis])]) : undefined;
      at += size;
      return g;
    });
  },
};
