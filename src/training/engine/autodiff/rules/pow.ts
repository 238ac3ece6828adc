import { GraphError } from '../../../../models/onnx/index.js';
import type { GradRule } from '../context.js';

/** Only constant exponents: d(x^p) = p x^(p-1). */
export const powGrad: GradRule = {
  opType: 'Pow',
  grad: (c) => {
    const e = c.g.initializers.get(c.x(1).name)?.tensor;
    if (!e || e.data.length !== 1) throw new GraphError(`${c.node.name} (Pow): gradients need a constant scalar exponent`);
    if (c.needs[1]) throw new GraphError(`${c.node.name} (Pow): no gradient for the exponent`);
    const p = Number(e.data[0]);
    const x = c.x(0);
    return [c.op('Mul', [c.dy, c.op('Mul', [c.scalar(p, x), c.op('Pow', [x, c.scalar(p - 1, x)])])]), undefined];
  },
};
