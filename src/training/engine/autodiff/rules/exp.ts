import type { GradRule } from '../context.js';

export const expGrad: GradRule = { opType: 'Exp', grad: (c) => [c.op('Mul', [c.dy, c.y])] };
