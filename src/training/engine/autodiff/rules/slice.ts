import { GraphError } from '../../../../models/onnx/index.js';
import type { GradRule } from '../context.js';

const constInts = (c: Parameters<GradRule['grad']>[0], i: number): number[] | undefined => {
  const v = c.inputs[i];
  const t = v ? c.g.initializers.get(v.name)?.tensor : undefined;
  return t ? Array.from(t.data as BigInt64Array, Number) : undefined;
};

/** The slice's gradient is dy zero-padded back to the input's extent (unit steps only). */
export const sliceGrad: GradRule = {
  opType: 'Slice',
  grad: (c) => {
    const x = c.x(0);
    const r = x.shape.length;
    const starts = constInts(c, 1);
    const ends = constInts(c, 2);
    if (!starts || !ends) throw new GraphError(`${c.node.name} (Slice): gradients need constant starts/ends`);
    const axes = (constInts(c, 3) ?? starts.map((_, i) => i)).map((a) => (a < 0 ? a + r : a));
    const steps = constInts(c, 4) ?? starts.map(() => 1);
    if (steps.some((s) => s !== 1)) throw new GraphError(`${c.node.name} (Slice): gradients support unit steps only`);
    const pads = new Array<number>(2 * r).fill(0);
    axes.forEach((a, i) => {
      const d = c.fixed(x, a);
      const s = Math.min(Math.max(starts[i] < 0 ? starts[i] + d : starts[i], 0), d);
      const e = Math.min(Math.max(ends[i] < 0 ? ends[i] + d : ends[i], 0), d);
      pads[a] = s;
      pads[a + r] = d - Math.max(e, s);
    });
    return [c.op('Pad', [c.dy, c.ints(pads)], { mode: 'constant' })];
  },
};
