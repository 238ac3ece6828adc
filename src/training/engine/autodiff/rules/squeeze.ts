import type { GradRule } from '../context.js';

/** Unsqueeze and Squeeze undo each other; the input's shape says where the unit axes were. */
export const unsqueezeGrad: GradRule = { opType: 'Unsqueeze', grad: (c) => [c.reshapeLike(c.dy, c.x(0)), undefined] };
export const squeezeGrad: GradRule = { opType: 'Squeeze', grad: (c) => [c.reshapeLike(c.dy, c.x(0)), undefined] };
