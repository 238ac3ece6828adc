import type { Dim, OpSchema } from '../graph.js';
import { broadcastShapes } from './shape-util.js';

const dimsAgree = (a: Dim, b: Dim): boolean => a === b || typeof a === 'string' || typeof b === 'string';

export const linalgOps: OpSchema[] = [
  {
    opType: 'MatMul',
    attrs: {},
    inputs: [2, 2],
    infer: (ctx) => {
      const a = ctx.input(0);
      const b = ctx.input(1);
      if (a.dtype !== b.dtype) ctx.fail(`operand types differ (${a.dtype} vs ${b.dtype})`);
      if (a.shape.length < 2 || b.shape.length < 2) ctx.fail('cortexcast uses MatMul on rank >= 2 operands only');
      const [m, k] = a.shape.slice(-2);
      const [k2, n] = b.shape.slice(-2);
      if (!dimsAgree(k, k2)) ctx.fail(`inner dimensions differ (${k} vs ${k2})`);
      const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), ctx);
      return [{ dtype: a.dtype, shape: [...batch, m, n] }];
    },
  },
  {
    opType: 'Gemm',
    attrs: { alpha: 'float', beta: 'float', transA: 'int', transB: 'int' },
    inputs: [2, 3],
    infer: (ctx) => {
      const a = ctx.input(0);
      const b = ctx.input(1);
      if (a.shape.length !== 2 || b.shape.length !== 2) ctx.fail('Gemm takes rank-2 operands');
      const [m, k] = ctx.attr<number>('transA', 0) ? [a.shape[1], a.shape[0]] : [a.shape[0], a.shape[1]];
      const [k2, n] = ctx.attr<number>('transB', 0) ? [b.shape[1], b.shape[0]] : [b.shape[0], b.shape[1]];
      if (!dimsAgree(k, k2)) ctx.fail(`inner dimensions differ (${k} vs ${k2})`);
      const c = ctx.inputs[2];
      if (c) broadcastShapes([m, n], c.shape, ctx);
      return [{ dtype: a.dtype, shape: [m, n] }];
    },
  },
];
