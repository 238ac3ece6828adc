import type { GradRule } from '../context.js';

/**
 * Floor is piecewise constant: its derivative is 0 wherever it exists. Bilinear sampling floors a
 * learned position to find the corner pixels; the position's gradient flows through the
 * interpolation weights (x - floor(x)), not through this op.
 */
export const floorGrad: GradRule = { opType: 'Floor', grad: (c) => [c.expandLike(c.zero(c.dy), c.x(0))] };
