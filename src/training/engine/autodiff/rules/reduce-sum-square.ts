import type { GradRule } from '../context.js';
import { spreadBack } from './reduce-util.js';

export const reduceSumSquareGrad: GradRule = {
  opType: 'ReduceSumSquare',
  grad: (c) => [c.op('Mul', [spreadBack(c, c.dy), c.op('Mul', [c.x(0), c.scalar(2, c.x(0))])]), undefined],
};
