import type { Dim, OpSchema } from '../graph.js';
import { sizeOf } from '../tensor.js';
import { broadcastShapes, constInts, dimMul, normAxis } from './shape-util.js';

const fixed = (shape: readonly Dim[]): number | undefined =>
  shape.every((d) => typeof d === 'number') ? sizeOf(shape as number[]) : undefined;

/**
 * The -1 of a reshape whose sizes are not all known, as an expression of the symbols left over:
 * [batch, 8] -> [-1, 1] gives 'batch*8' (not 'batch': ONNX Runtime sizes buffers by these names, so
 * equal names must mean equal sizes), [batch, 2, 4] -> [-1, 8] gives 'batch', and [batch, C, H, W]
 * -> [0, C, -1] gives H*W.
 */
function inferredSymbolic(input: readonly Dim[], known: readonly Dim[]): Dim {
  // Products written by dimMul ('batch*8') count as their factors.
  const factors = input.flatMap((d) => (typeof d === 'number' ? [d] : d.split('*').map((t) => (/^\d+$/.test(t) ? Number(t) : t))));
  const left = factors.filter((d): d is string => typeof d === 'string');
  let rest = 1;
  for (const d of known) {
    if (typeof d === 'number') rest *= d;
    else {
      const i = left.indexOf(d);
      if (i < 0) return `?${input.join('*')}/${known.join('*')}`;
      left.splice(i, 1);
    }
  }
  const inFixed = factors.reduce<number>((p, d) => (typeof d === 'number' ? p * d : p), 1);
  if (!left.length) return inFixed / rest;
  const base = left.join('*');
  if (inFixed === rest) return base;
  return inFixed % rest === 0 ? dimMul(base, inFixed / rest) : `${base}*${inFixed}/${rest}`;
}

const reshape: OpSchema = {
  opType: 'Reshape',
  attrs: { allowzero: 'int' },
  inputs: [2, 2],
  infer: (ctx) => {
    const x = ctx.input(0);
    const src = ctx.constant(1) ? undefined : ctx.shapeSource(1);
    if (src) return [{ dtype: x.dtype, shape: [...src.shape] }];
    const target = constInts(ctx, 1, 'shape');
    const out: Dim[] = target.map((d, i) => (d === 0 ? x.shape[i] : d));
    const minus = out.filter((d) => d === -1).length;
    if (minus > 1) ctx.fail('at most one -1 in the target shape');
    const known = out.filter((d) => d !== -1);
    const total = fixed(x.shape);
    if (minus === 1) {
      const rest = fixed(known);
      if (total !== undefined && rest !== undefined) {
        if (total % rest !== 0) ctx.fail(`cannot reshape ${total} elements into [${target}]`);
        out[out.indexOf(-1)] = total / rest;
      } else out[out.indexOf(-1)] = inferredSymbolic(x.shape, known);
    } else if (total !== undefined) {
      const n = fixed(out);
      if (n !== undefined && n !== total) ctx.fail(`cannot reshape ${total} elements into [${target}]`);
    }
    return [{ dtype: x.dtype, shape: out }];
  },
};

const transpose: OpSchema = {
  opType: 'Transpose',
  attrs: { perm: 'ints' },
  inputs: [1, 1],
  infer: (ctx) => {
    const x = ctx.input(0);
    const perm = ctx.attr<number[]>('perm', x.shape.map((_, i) => x.shape.length - 1 - i));
    if (perm.length !== x.shape.length || [...perm].sort().some((p, i) => p !== i)) ctx.fail(`perm [${perm}] is not a permutation of rank ${x.shape.length}`);
    return [{ dtype: x.dtype, shape: perm.map((p) => x.shape[p]) }];
  },
};

const flatten: OpSchema = {
  opType: 'Flatten',
  attrs: { axis: 'int' },
  inputs: [1, 1],
  infer: (ctx) => {
    const x = ctx.input(0);
    const axis = ctx.attr<number>('axis', 1);
    const a = axis < 0 ? axis + x.shape.length : axis;
    const prod = (s: readonly Dim[]): Dim => s.reduce<Dim>((p, d) => dimMul(p, d), 1);
    return [{ dtype: x.dtype, shape: [prod(x.shape.slice(0, a)), prod(x.shape.slice(a))] }];
  },
};

const unsqueeze: OpSchema = {
  opType: 'Unsqueeze',
  attrs: {},
  inputs: [2, 2],
  infer: (ctx) => {
    const x = ctx.input(0);
    const axes = constInts(ctx, 1, 'axes');
    const rank = x.shape.length + axes.length;
    const norm = axes.map((a) => normAxis(a, rank, ctx));
    const out: Dim[] = [];
    let j = 0;
    for (let i = 0; i < rank; i++) out.push(norm.includes(i) ? 1 : x.shape[j++]);
    return [{ dtype: x.dtype, shape: out }];
  },
};

const squeeze: OpSchema = {
  opType: 'Squeeze',
  attrs: {},
  inputs: [1, 2],
  infer: (ctx) => {
    const x = ctx.input(0);
    const axes = ctx.inputs[1] ? constInts(ctx, 1, 'axes').map((a) => normAxis(a, x.shape.length, ctx)) : x.shape.flatMap((d, i) => (d === 1 ? [i] : []));
    for (const a of axes) if (x.shape[a] !== 1) ctx.fail(`cannot squeeze axis ${a} of size ${x.shape[a]}`);
    return [{ dtype: x.dtype, shape: x.shape.filter((_, i) => !axes.includes(i)) }];
  },
};

const slice: OpSchema = {
  opType: 'Slice',
  attrs: {},
  inputs: [3, 5],
  infer: (ctx) => {
    const x = ctx.input(0);
    const starts = constInts(ctx, 1, 'starts');
    const ends = constInts(ctx, 2, 'ends');
    const axes = ctx.inputs[3] ? constInts(ctx, 3, 'axes') : starts.map((_, i) => i);
    const steps = ctx.inputs[4] ? constInts(ctx, 4, 'steps') : starts.map(() => 1);
    const out = [...x.shape];
    axes.forEach((ax, i) => {
      const a = normAxis(ax, x.shape.length, ctx);
      const d = x.shape[a];
      if (typeof d !== 'number') {
        out[a] = `${d}'`;
        return;
      }
      const step = steps[i];
      if (step === 0) ctx.fail('slice step 0');
      const clampIdx = (v: number, lo: number, hi: number): number => Math.min(Math.max(v < 0 ? v + d : v, lo), hi);
      const s = step > 0 ? clampIdx(starts[i], 0, d) : clampIdx(starts[i], -1, d - 1);
      const e = step > 0 ? clampIdx(ends[i], 0, d) : clampIdx(ends[i], -1, d - 1);
      out[a] = Math.max(0, Math.ceil((e - s) / step));
    });
    return [{ dtype: x.dtype, shape: out }];
  },
};

const concat: OpSchema = {
  opType: 'Concat',
  attrs: { axis: 'int' },
  inputs: [1, 1 << 16],
  infer: (ctx) => {
    const first = ctx.input(0);
    const axis = normAxis(ctx.attr<number>('axis'), first.shape.length, ctx);
    let total: Dim = 0;
    for (let k = 0; k < ctx.inputs.length; k++) {
      const v = ctx.input(k);
      if (v.shape.length !== first.shape.length || v.dtype !== first.dtype) ctx.fail('inputs must share rank and type');
      v.shape.forEach((d, i) => {
        if (i !== axis && typeof d === 'number' && typeof first.shape[i] === 'number' && d !== first.shape[i]) ctx.fail(`inputs differ on axis ${i}`);
      });
      const d = v.shape[axis];
      total = typeof total === 'number' && typeof d === 'number' ? total + d : `${total}+${d}`;
    }
    const out = [...first.shape];
    out[axis] = total;
    return [{ dtype: first.dtype, shape: out }];
  },
};

const pad: OpSchema = {
  opType: 'Pad',
  attrs: { mode: 'string' },
  // Opset 17: data, pads, optional constant_value (the axes input arrived in opset 18).
  inputs: [2, 3],
  infer: (ctx) => {
    const x = ctx.input(0);
    const pads = constInts(ctx, 1, 'pads');
    const axes = x.shape.map((_, i) => i);
    if (pads.length !== 2 * axes.length) ctx.fail(`pads has ${pads.length} values for ${axes.length} axes`);
    const out = [...x.shape];
    axes.forEach((a, i) => {
      const d = out[a];
      out[a] = typeof d === 'number' ? d + pads[i] + pads[i + axes.length] : `${d}'`;
    });
    return [{ dtype: x.dtype, shape: out }];
  },
};

const gather: OpSchema = {
  opType: 'Gather',
  attrs: { axis: 'int' },
  inputs: [2, 2],
  infer: (ctx) => {
    const x = ctx.input(0);
    const idx = ctx.input(1);
    const axis = normAxis(ctx.attr<number>('axis', 0), x.shape.length, ctx);
    return [{ dtype: x.dtype, shape: [...x.shape.slice(0, axis), ...idx.shape, ...x.shape.slice(axis + 1)] }];
  },
};

const gatherElements: OpSchema = {
  opType: 'GatherElements',
  attrs: { axis: 'int' },
  inputs: [2, 2],
  infer: (ctx) => {
    const x = ctx.input(0);
    const idx = ctx.input(1);
    if (idx.shape.length !== x.shape.length) ctx.fail('indices must have the rank of the data');
    return [{ dtype: x.dtype, shape: [...idx.shape] }];
  },
};

const expand: OpSchema = {
  opType: 'Expand',
  attrs: {},
  inputs: [2, 2],
  infer: (ctx) => {
    const x = ctx.input(0);
    const src = ctx.constant(1) ? undefined : ctx.shapeSource(1);
    return [{ dtype: x.dtype, shape: broadcastShapes(x.shape, src ? src.shape : constInts(ctx, 1, 'shape'), ctx) }];
  },
};

const shapeOp: OpSchema = {
  opType: 'Shape',
  attrs: { start: 'int', end: 'int' },
  inputs: [1, 1],
  infer: (ctx) => [{ dtype: 'int64', shape: [ctx.input(0).shape.length] }],
};

const scatterElements: OpSchema = {
  opType: 'ScatterElements',
  attrs: { axis: 'int', reduction: 'string' },
  inputs: [3, 3],
  infer: (ctx) => {
    const x = ctx.input(0);
    if (ctx.input(1).shape.length !== x.shape.length || ctx.input(2).shape.length !== x.shape.length) ctx.fail('indices and updates must have the rank of the data');
    return [{ dtype: x.dtype, shape: [...x.shape] }];
  },
};

export const shapeOps: OpSchema[] = [scatterElements, reshape, transpose, flatten, unsqueeze, squeeze, slice, concat, pad, gather, gatherElements, expand, shapeOp];
