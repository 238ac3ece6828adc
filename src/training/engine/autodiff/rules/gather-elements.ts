import type { GradRule } from '../context.js';

/** Scatter-add dy back to the gathered positions (ScatterElements with reduction 'add', opset 16+). */
export const gatherElementsGrad: GradRule = {
  opType: 'GatherElements',
  grad: (c) => {
    const x = c.x(0);
    const zeros = c.expandLike(c.zero(x), x);
    return [c.op('ScatterElements', [zeros, c.x(1), c.dy], { axis: c.attr<number>('axis', 0), reduction: 'add' }), undefined];
  },
};
