import type { Value } from '../../../../models/onnx/index.js';
import type { GradContext } from '../context.js';

/** The reduced axes of a reduction node (attribute or constant input), normalised. */
export function reducedAxes(c: GradContext): number[] {
  const x = c.x(0);
  const r = x.shape.length;
  const fromInput = c.inputs[1] ? c.g.initializers.get(c.inputs[1].name)?.tensor : undefined;
  const axes = fromInput ? Array.from(fromInput.data as BigInt64Array, Number) : c.node.attrs.axes ? (c.node.attrs.axes.value as number[]) : [...Array(r).keys()];
  return axes.map((a) => (a < 0 ? a + r : a)).sort((a, b) => a - b);
}

/** dy of a reduction, broadcast back over the input's shape. */
export function spreadBack(c: GradContext, dy: Value): Value {
  const keep = c.attr<number>('keepdims', 1) === 1;
  const kept = keep ? dy : c.op('Unsqueeze', [dy, c.ints(reducedAxes(c))]);
  return c.expandLike(kept, c.x(0));
}

/** Number of elements each output reduces over (static sizes required). */
export const reducedCount = (c: GradContext): number => reducedAxes(c).reduce((n, a) => n * c.fixed(c.x(0), a), 1);
