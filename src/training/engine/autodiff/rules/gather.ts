import { type Value, tensor } from '../../../../models/onnx/index.js';
import type { GradRule } from '../context.js';

/**
 * Gather along `axis`. 1-D indices (the common case: a readout picking positions from a feature map):
 * ScatterElements with reduction 'add' of dy into zeros, the indices broadcast to dy's shape, which
 * also works when other axes are dynamic (a served batch). Other index shapes: dy goes back through a
 * one-hot matrix built in the graph. Either way indices may be computed at run time and repeated
 * indices accumulate.
 */
export const gatherGrad: GradRule = {
  opType: 'Gather',
  grad: (c) => {
    const x = c.x(0);
    const idx = c.x(1);
    const r = x.shape.length;
    const axis = ((a) => (a < 0 ? a + r : a))(c.attr<number>('axis', 0));
    if (idx.shape.length === 1) {
      const bshape = x.shape.map((_, i) => (i === axis ? -1 : 1));
      const spread = c.expandLike(c.op('Reshape', [c.op('Cast', [idx], { to: 7 }), c.ints(bshape)]), c.dy);
      return [c.op('ScatterElements', [c.expandLike(c.zero(x), x), spread, c.dy], { axis, reduction: 'add' }), undefined];
    }
    const N = c.fixed(x, axis);
    const pre = x.shape.slice(0, axis).map((_, i) => c.fixed(x, i));
    const post = x.shape.slice(axis + 1).map((_, i) => c.fixed(x, axis + 1 + i));
    const K = idx.shape.reduce<number>((n, _, i) => n * c.fixed(idx, i), 1);
    const P = pre.reduce((a, b) => a * b, 1);
    const Q = post.reduce((a, b) => a * b, 1);
    // onehot[k, n] = (idx[k] mod N == n), negative indices wrapped.
    const flat = c.op('Reshape', [c.op('Cast', [idx], { to: 7 }), c.ints([K, 1])]);
    const wrapped = c.op('Mod', [c.op('Add', [flat, c.g.initializer('n', tensor('int64', [], [N]))]), c.g.initializer('n', tensor('int64', [], [N]))]);
    const range = c.g.initializer('range', tensor('int64', [1, N], [...Array(N).keys()]));
    const onehot: Value = c.op('Cast', [c.op('Equal', [wrapped, range])], { to: x.dtype === 'float64' ? 11 : 1 });
    // dy [pre, K, post] -> [P, Q, K] @ onehot [K, N] -> [P, Q, N] -> [pre, N, post]
    const d3 = c.op('Transpose', [c.op('Reshape', [c.dy, c.ints([P, K, Q])])], { perm: [0, 2, 1] });
    const back = c.op('Transpose', [c.op('MatMul', [d3, onehot])], { perm: [0, 2, 1] });
    return [c.op('Reshape', [back, c.ints([...pre, N, ...post])]), undefined];
  },
};
