import type { GradRule } from '../context.js';
import { spreadBack } from './reduce-util.js';

export const reduceSumGrad: GradRule = { opType: 'ReduceSum', grad: (c) => [spreadBack(c, c.dy), undefined] };
