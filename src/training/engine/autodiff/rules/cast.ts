import { ONNX_DTYPE } from '../../../../models/onnx/index.js';
import type { GradRule } from '../context.js';

export const castGrad: GradRule = { opType: 'Cast', grad: (c) => [c.op('Cast', [c.dy], { to: ONNX_DTYPE[c.x(0).dtype] })] };
