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
    // uint8 activations x int8 weights -> int32 (what ORT's quantized CPU kernels run); zero points optional.
    opType: 'MatMulInteger',
    attrs: {},
    inputs: [2, 4],
    infer: (ctx) => {
      const a = ctx.input(0);
      const b = ctx.input(1);
      if (a.dtype !== 'uint8' && a.dtype !== 'int8') ctx.fail(`A must be uint8 or int8, not ${a.dtype}`);
      if (b.dtype !== 'uint8' && b.dtype !== 'int8') ctx.fail(`B must be uint8 or int8, not ${b.dtype}`);
      if (a.shape.length !== 2 || b.shape.length !== 2) ctx.fail('cortexcast uses MatMulInteger on rank-2 operands only');
      if (!dimsAgree(a.shape[1], b.shape[0])) ctx.fail(`inner dimensions differ (${a.shape[1]} vs ${b.shape[0]})`);
      return [{ dtype: 'int32', shape: [a.shape[0], b.shape[1]] }];
    },
  },
  {
    // x -> (uint8 x, float scale, uint8 zero point), per tensor, from x's own min and max.
    opType: 'DynamicQuantizeLinear',
    attrs: {},
    inputs: [1, 1],
    outputs: [3, 3],
    infer: (ctx) => {
      const x = ctx.input(0);
      if (x.dtype !== 'float32') ctx.fail(`input must be float32, not ${x.dtype}`);
      return [
        { dtype: 'uint8', shape: [...x.shape] },
        { dtype: 'float32', shape: [] },
        { dtype: 'uint8', shape: [] },
      ];
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
