import type { GradRule } from '../context.js';
import { reducedAxes, spreadBack } from './reduce-util.js';

/** The gradient goes to the extreme elements, shared equally among ties. */
const extreme = (opType: 'ReduceMax' | 'ReduceMin'): GradRule => ({
  opType,
  grad: (c) => {
    const x = c.x(0);
    const keepY = spreadBack(c, c.y);
    const hit = c.op('Cast', [c.op('Equal', [x, keepY])], { to: x.dtype === 'float64' ? 11 : 1 });
    const ties = spreadBack(c, c.op('ReduceSum', [hit, c.ints(reducedAxes(c))], { keepdims: c.attr<number>('keepdims', 1) }));
    return [c.op('Div', [c.op('Mul', [spreadBack(c, c.dy), hit]), ties])];
  },
});

export const reduceMaxGrad = extreme('ReduceMax');
export const reduceMinGrad = extreme('ReduceMin');
