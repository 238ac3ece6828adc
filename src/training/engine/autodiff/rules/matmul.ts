import type { Value } from '../../../../models/onnx/index.js';
import type { GradContext, GradRule } from '../context.js';

const swapLast = (c: GradContext, v: Value): Value => {
  const r = v.shape.length;
  const perm = [...Array(r).keys()];
  [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
  return c.op('Transpose', [v], { perm });
};

/** dA = dy B^T, dB = A^T dy (batch dims broadcast; the engine sums them back). */
export const matmulGrad: GradRule = {
  opType: 'MatMul',
  grad: (c) => [c.needs[0] ? c.op('MatMul', [c.dy, swapLast(c, c.x(1))]) : undefined, c.needs[1] ? c.op('MatMul', [swapLast(c, c.x(0)), c.dy]) : undefined],
};
