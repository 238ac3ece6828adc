import type { GradRule } from '../context.js';

/**
 * Y = alpha op(A) op(B) + beta C. With A' = op(A): dA' = alpha dy op(B)^T and dB' = alpha A'^T dy,
 * transposed back where A or B was transposed - each as one Gemm.
 */
export const gemmGrad: GradRule = {
  opType: 'Gemm',
  grad: (c) => {
    const alpha = c.attr<number>('alpha', 1);
    const beta = c.attr<number>('beta', 1);
    const tA = c.attr<number>('transA', 0);
    const tB = c.attr<number>('transB', 0);
    const [a, b] = [c.x(0), c.x(1)];
    const da = c.needs[0] ? (tA ? c.op('Gemm', [b, c.dy], { alpha, transA: tB, transB: 1 }) : c.op('Gemm', [c.dy, b], { alpha, transB: 1 - tB })) : undefined;
    const db = c.needs[1] ? (tB ? c.op('Gemm', [c.dy, a], { alpha, transA: 1, transB: tA }) : c.op('Gemm', [a, c.dy], { alpha, transA: 1 - tA })) : undefined;
    const dc = c.inputs[2] && c.needs[2] ? (beta === 1 ? c.dy : c.op('Mul', [c.dy, c.scalar(beta, c.dy)])) : undefined;
    return [da, db, dc];
  },
};
