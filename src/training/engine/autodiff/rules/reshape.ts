import type { GradRule } from '../context.js';

export const reshapeGrad: GradRule = { opType: 'Reshape', grad: (c) => [c.reshapeLike(c.dy, c.x(0)), undefined] };
export const flattenGrad: GradRule = { opType: 'Flatten', grad: (c) => [c.reshapeLike(c.dy, c.x(0))] };
