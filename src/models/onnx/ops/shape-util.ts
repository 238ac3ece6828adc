import type { Dim, InferContext, OutputInfo } from '../graph.js';
import type { TensorData } from '../tensor.js';

/** Numpy-style broadcast of two shapes; symbolic dims broadcast with 1 and with themselves. */
export function broadcastShapes(a: readonly Dim[], b: readonly Dim[], ctx: InferContext): Dim[] {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x === y || y === 1) out.push(x);
    else if (x === 1) out.push(y);
    else if (typeof x === 'string') out.push(y);
    else if (typeof y === 'string') out.push(x);
    else ctx.fail(`shapes do not broadcast at axis ${i} (${x} vs ${y})`);
  }
  return out;
}

export const normAxis = (axis: number, rank: number, ctx: InferContext): number => {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) ctx.fail(`axis ${axis} is out of range for rank ${rank}`);
  return a;
};

/** Integer values of a constant int64/int32 input (shape, axes, pads, starts...). */
export function constInts(ctx: InferContext, i: number, what: string): number[] {
  const t: TensorData | undefined = ctx.constant(i);
  if (!t) return ctx.fail(`${what} (input ${i}) must be a constant initializer`);
  return Array.from(t.data as ArrayLike<number | bigint>, (x) => Number(x));
}

export const same = (ctx: InferContext, i = 0): OutputInfo[] => {
  const x = ctx.input(i);
  return [{ dtype: x.dtype, shape: [...x.shape] }];
};

export const dimMul = (a: Dim, b: Dim): Dim => {
  if (a === 1) return b;
  if (b === 1) return a;
  return typeof a === 'number' && typeof b === 'number' ? a * b : `${a}*${b}`;
};

/** Output size of a strided window: floor((in + pads - dilation*(k-1) - 1)/stride) + 1. */
export function windowOut(inp: Dim, k: number, stride: number, padBegin: number, padEnd: number, dilation: number, ctx: InferContext, ceil = false): Dim {
  if (typeof inp !== 'number') return inp + "'";
  const span = inp + padBegin + padEnd - dilation * (k - 1) - 1;
  const out = (ceil ? Math.ceil(span / stride) : Math.floor(span / stride)) + 1;
  if (out < 1) ctx.fail(`spatial size ${inp} is too small for kernel ${k} (stride ${stride}, pads ${padBegin}/${padEnd}, dilation ${dilation})`);
  return out;
}
