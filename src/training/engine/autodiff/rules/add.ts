import type { GradRule } from '../context.js';

/** d(a+b) = dy for both; the engine sums over broadcast axes. */
export const addGrad: GradRule = { opType: 'Add', grad: (c) => [c.dy, c.dy] };
