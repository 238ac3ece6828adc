import type { Dim, InferContext, OpSchema, OutputInfo } from '../graph.js';
import { windowOut } from './shape-util.js';

interface Window {
  kernel: number[];
  strides: number[];
  dilations: number[];
  pads: number[];
}

function windowAttrs(ctx: InferContext, spatial: number, kernel: number[]): Window {
  const strides = ctx.attr<number[]>('strides', Array(spatial).fill(1));
  const dilations = ctx.hasAttr('dilations') ? ctx.attr<number[]>('dilations') : Array(spatial).fill(1);
  const pads = ctx.attr<number[]>('pads', Array(spatial * 2).fill(0));
  if (ctx.hasAttr('auto_pad') && ctx.attr<string>('auto_pad') !== 'NOTSET') ctx.fail('auto_pad is not supported; give explicit pads');
  if (strides.length !== spatial || pads.length !== 2 * spatial || dilations.length !== spatial || kernel.length !== spatial)
    ctx.fail(`strides/pads/dilations/kernel must match ${spatial} spatial dims`);
  return { kernel, strides, dilations, pads };
}

const convAttrs = { strides: 'ints', pads: 'ints', dilations: 'ints', group: 'int', kernel_shape: 'ints', auto_pad: 'string' } as const;

const conv: OpSchema = {
  opType: 'Conv',
  attrs: convAttrs,
  inputs: [2, 3],
  infer: (ctx) => {
    const x = ctx.input(0);
    const w = ctx.input(1);
    if (x.shape.length !== w.shape.length || x.shape.length < 3) ctx.fail('input and weight must have the same rank >= 3');
    const spatial = x.shape.length - 2;
    const group = ctx.attr<number>('group', 1);
    const kernel = w.shape.slice(2).map((d) => (typeof d === 'number' ? d : ctx.fail('kernel dims must be fixed')));
    const win = windowAttrs(ctx, spatial, kernel);
    const cin = x.shape[1];
    if (typeof cin === 'number' && typeof w.shape[1] === 'number' && cin !== w.shape[1] * group)
      ctx.fail(`input has ${cin} channels, weight expects ${w.shape[1]} x group ${group}`);
    const cout = w.shape[0];
    const b = ctx.inputs[2];
    if (b && (b.shape.length !== 1 || b.shape[0] !== cout)) ctx.fail(`bias must be [${cout}]`);
    const out: Dim[] = [x.shape[0], cout];
    for (let i = 0; i < spatial; i++)
      out.push(windowOut(x.shape[2 + i], win.kernel[i], win.strides[i], win.pads[i], win.pads[i + spatial], win.dilations[i], ctx));
    return [{ dtype: x.dtype, shape: out }];
  },
};

const convTranspose: OpSchema = {
  opType: 'ConvTranspose',
  attrs: { ...convAttrs, output_padding: 'ints', output_shape: 'ints' },
  inputs: [2, 3],
  infer: (ctx) => {
    const x = ctx.input(0);
    const w = ctx.input(1);
    if (x.shape.length !== w.shape.length || x.shape.length < 3) ctx.fail('input and weight must have the same rank >= 3');
    if (ctx.hasAttr('output_shape')) ctx.fail('output_shape is not supported; give pads and output_padding');
    const spatial = x.shape.length - 2;
    const group = ctx.attr<number>('group', 1);
    const kernel = w.shape.slice(2).map((d) => (typeof d === 'number' ? d : ctx.fail('kernel dims must be fixed')));
    const win = windowAttrs(ctx, spatial, kernel);
    const outPad = ctx.attr<number[]>('output_padding', Array(spatial).fill(0));
    if (typeof x.shape[1] === 'number' && x.shape[1] !== w.shape[0]) ctx.fail(`input has ${x.shape[1]} channels, weight expects ${w.shape[0]}`);
    const cout = (w.shape[1] as number) * group;
    const out: Dim[] = [x.shape[0], cout];
    for (let i = 0; i < spatial; i++) {
      const inp = x.shape[2 + i];
      if (typeof inp !== 'number') {
        out.push(`${inp}'`);
        continue;
      }
      const size = win.strides[i] * (inp - 1) + outPad[i] + (win.kernel[i] - 1) * win.dilations[i] + 1 - win.pads[i] - win.pads[i + spatial];
      if (size < 1) ctx.fail(`output size ${size} < 1 on spatial axis ${i}`);
      out.push(size);
    }
    return [{ dtype: x.dtype, shape: out }];
  },
};

const pool = (opType: string): OpSchema => ({
  opType,
  attrs: { kernel_shape: 'ints', strides: 'ints', pads: 'ints', ceil_mode: 'int', count_include_pad: 'int', dilations: 'ints', auto_pad: 'string' },
  inputs: [1, 1],
  infer: (ctx): OutputInfo[] => {
    const x = ctx.input(0);
    const spatial = x.shape.length - 2;
    const win = windowAttrs(ctx, spatial, ctx.attr<number[]>('kernel_shape'));
    const ceil = ctx.attr<number>('ceil_mode', 0) === 1;
    const out: Dim[] = [x.shape[0], x.shape[1]];
    for (let i = 0; i < spatial; i++)
      out.push(windowOut(x.shape[2 + i], win.kernel[i], win.strides[i], win.pads[i], win.pads[i + spatial], win.dilations[i], ctx, ceil));
    return [{ dtype: x.dtype, shape: out }];
  },
});

export const convOps: OpSchema[] = [
  conv,
  convTranspose,
  pool('MaxPool'),
  pool('AveragePool'),
  {
    opType: 'GlobalAveragePool',
    attrs: {},
    inputs: [1, 1],
    infer: (ctx) => {
      const x = ctx.input(0);
      return [{ dtype: x.dtype, shape: [x.shape[0], x.shape[1], ...x.shape.slice(2).map(() => 1)] }];
    },
  },
  {
    opType: 'BatchNormalization',
    attrs: { epsilon: 'float', momentum: 'float', training_mode: 'int' },
    inputs: [5, 5],
    infer: (ctx) => {
      const x = ctx.input(0);
      if (ctx.attr<number>('training_mode', 0) !== 0) ctx.fail('training_mode BatchNormalization is built from primitive ops in cortexcast');
      const c = x.shape[1];
      for (let i = 1; i < 5; i++) {
        const p = ctx.input(i);
        if (p.shape.length !== 1 || (typeof c === 'number' && p.shape[0] !== c)) ctx.fail(`parameter ${i} must be [${c}], got [${p.shape}]`);
      }
      return [{ dtype: x.dtype, shape: [...x.shape] }];
    },
  },
];
