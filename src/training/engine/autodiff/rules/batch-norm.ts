import { GraphError } from '../../../../models/onnx/index.js';
import type { GradRule } from '../context.js';

/**
 * Inference-form BatchNormalization (running statistics): y = (x - mean) / sqrt(var + eps) * scale
 * + bias, so dx = dy * scale / sqrt(var + eps) per channel. This is what image optimisation through
 * a frozen, exported network (MEIs, the inverted encoder) differentiates. Training graphs build
 * batch norm from primitive ops instead, so no gradient w.r.t. scale, bias or statistics is needed.
 */
export const batchNormGrad: GradRule = {
  opType: 'BatchNormalization',
  grad: (c) => {
    if (c.needs.slice(1).some(Boolean)) throw new GraphError(`${c.node.name}: BatchNormalization gradients reach only its input x (train with layers.batchNorm)`);
    const x = c.x(0);
    const channels = c.fixed(x, 1);
    const bshape = [1, channels, ...x.shape.slice(2).map(() => 1)];
    const eps = c.scalar(c.attr<number>('epsilon', 1e-5), x);
    const gain = c.op('Div', [c.x(1), c.op('Sqrt', [c.op('Add', [c.x(4), eps])])]);
    return [c.op('Mul', [c.dy, c.op('Reshape', [gain, c.ints(bshape)])])];
  },
};
