import type { OpSchema } from '../graph.js';
import { constInts, normAxis } from './shape-util.js';

/**
 * Reductions at opset 17: ReduceSum takes its axes as a constant input (since opset 13), the others
 * as an attribute (they moved to an input only in opset 18). Use layers.reduce() to get this right.
 */
const reduce = (opType: string): OpSchema => ({
  opType,
  attrs: opType === 'ReduceSum' ? { keepdims: 'int', noop_with_empty_axes: 'int' } : { keepdims: 'int', axes: 'ints' },
  inputs: opType === 'ReduceSum' ? [1, 2] : [1, 1],
  infer: (ctx) => {
    const x = ctx.input(0);
    const keep = ctx.attr<number>('keepdims', 1) === 1;
    const given = ctx.inputs[1] ? constInts(ctx, 1, 'axes') : ctx.hasAttr('axes') ? ctx.attr<number[]>('axes') : undefined;
    const axes = given ? given.map((a) => normAxis(a, x.shape.length, ctx)) : x.shape.map((_, i) => i);
    const shape = keep ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
    return [{ dtype: x.dtype, shape }];
  },
});

export const reduceOps: OpSchema[] = ['ReduceMean', 'ReduceSum', 'ReduceSumSquare', 'ReduceMax', 'ReduceMin', 'ReduceL2'].map(reduce);
