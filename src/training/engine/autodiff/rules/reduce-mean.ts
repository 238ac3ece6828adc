import type { GradRule } from '../context.js';
import { reducedCount, spreadBack } from './reduce-util.js';

export const reduceMeanGrad: GradRule = {
  opType: 'ReduceMean',
  grad: (c) => [spreadBack(c, c.op('Mul', [c.dy, c.scalar(1 / reducedCount(c), c.dy)])), undefined],
};
