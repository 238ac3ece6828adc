import type { GradRule } from '../context.js';

export const logGrad: GradRule = { opType: 'Log', grad: (c) => [c.op('Div', [c.dy, c.x(0)])] };
