import type { GradRule } from '../context.js';

/** NOTE: Sign(0) = 0, so the gradient at 0 is 0 (PyTorch's convention). */
export const absGrad: GradRule = { opType: 'Abs', grad: (c) => [c.op('Mul', [c.dy, c.op('Sign', [c.x(0)])])] };
