import type { GradRule } from '../context.js';

export const negGrad: GradRule = { opType: 'Neg', grad: (c) => [c.op('Neg', [c.dy])] };
