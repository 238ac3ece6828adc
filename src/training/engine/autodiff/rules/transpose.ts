import type { GradRule } from '../context.js';

export const transposeGrad: GradRule = {
  opType: 'Transpose',
  grad: (c) => {
    const r = c.x(0).shape.length;
    const perm = c.attr<number[]>('perm', [...Array(r).keys()].reverse());
    const inverse = new Array<number>(r);
    perm.forEach((p, i) => (inverse[p] = i));
    return [c.op('Transpose', [c.dy], { perm: inverse })];
  },
};
