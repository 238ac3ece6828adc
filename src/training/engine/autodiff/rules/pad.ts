import { GraphError, type Value } from '../../../../models/onnx/index.js';
import type { GradContext, GradRule } from '../context.js';

/** A negative-step Slice end that reaches past index 0. */
const BEFORE_START = -(2 ** 31);

const slice = (c: GradContext, v: Value, axis: number, start: number, end: number, step = 1): Value =>
  c.op('Slice', [v, c.ints([start]), c.ints([end]), c.ints([axis]), c.ints([step])]);

const placeAt = (c: GradContext, v: Value, axis: number, before: number, after: number, rank: number): Value => {
  const pads = new Array<number>(2 * rank).fill(0);
  pads[axis] = before;
  pads[axis + rank] = after;
  return c.op('Pad', [v, c.ints(pads)], { mode: 'constant' });
};

/**
 * Constant padding: dx is dy's centre. Reflect padding: each reflected border folds back, flipped,
 * onto the input rows it copied (x[1..pb] and x[n-1-pe..n-2]); axes are undone one at a time.
 */
export const padGrad: GradRule = {
  opType: 'Pad',
  grad: (c) => {
    const x = c.x(0);
    const r = x.shape.length;
    const mode = c.attr<string>('mode', 'constant');
    const t = c.g.initializers.get(c.x(1).name)?.tensor;
    if (!t) throw new GraphError(`${c.node.name} (Pad): gradients need constant pads`);
    const pads = Array.from(t.data as BigInt64Array, Number);
    if (pads.some((p) => p < 0)) throw new GraphError(`${c.node.name} (Pad): negative pads have no gradient rule`);
    if (mode !== 'constant' && mode !== 'reflect') throw new GraphError(`${c.node.name} (Pad): no gradient for mode '${mode}'`);
    let g = c.dy;
    for (let a = 0; a < r; a++) {
      const [pb, pe] = [pads[a], pads[a + r]];
      if (pb === 0 && pe === 0) continue;
      const n = c.fixed(x, a);
      let dx = slice(c, g, a, pb, pb + n);
      if (mode === 'reflect') {
        if (pb >= n || pe >= n) throw new GraphError(`${c.node.name} (Pad): reflect pads must be smaller than the axis (${n})`);
        if (pb > 0) dx = c.op('Add', [dx, placeAt(c, slice(c, g, a, pb - 1, BEFORE_START, -1), a, 1, n - 1 - pb, r)]);
        if (pe > 0) dx = c.op('Add', [dx, placeAt(c, slice(c, g, a, pb + n + pe - 1, pb + n - 1, -1), a, n - 1 - pe, 1, r)]);
      }
      g = dx;
    }
    return [g, undefined, undefined];
  },
};
