import type { OpSchema } from '../graph.js';
import { constInts, normAxis } from './shape-util.js';

/** Opset-18 reductions: axes come as an optional constant input. */
const reduce = (opType: string): OpSchema => ({
  opType,
  attrs: { keepdims: 'int', noop_with_empty_axes: 'int' },
  inputs: [1, 2],
  infer: (ctx) => {
    const x = ctx.input(0);
    const keep = ctx.attr<number>('keepdims', 1) === 1;
    const axes = ctx.inputs[1] ? constInts(ctx, 1, 'axes').map((a) => normAxis(a, x.shape.length, ctx)) : x.shape.map((_, i) => i);
    const shape = keep ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !axes.includes(i));
    return [{ dtype: x.dtype, shape }];
  },
});

export const reduceOps: OpSchema[] = ['ReduceMean', 'ReduceSum', 'ReduceSumSquare', 'ReduceMax', 'ReduceMin', 'ReduceL2'].map(reduce);
