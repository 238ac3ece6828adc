import type { OpSchema } from '../graph.js';
import { broadcastShapes, same } from './shape-util.js';

const binary = (opType: string, attrs: OpSchema['attrs'] = {}): OpSchema => ({
  opType,
  attrs,
  inputs: [2, 2],
  infer: (ctx) => {
    const a = ctx.input(0);
    const b = ctx.input(1);
    if (a.dtype !== b.dtype) ctx.fail(`operand types differ (${a.dtype} vs ${b.dtype})`);
    return [{ dtype: a.dtype, shape: broadcastShapes(a.shape, b.shape, ctx) }];
  },
});

const compare = (opType: string): OpSchema => ({
  opType,
  attrs: {},
  inputs: [2, 2],
  infer: (ctx) => {
    const a = ctx.input(0);
    const b = ctx.input(1);
    if (a.dtype !== b.dtype) ctx.fail(`operand types differ (${a.dtype} vs ${b.dtype})`);
    return [{ dtype: 'bool', shape: broadcastShapes(a.shape, b.shape, ctx) }];
  },
});

const unary = (opType: string, attrs: OpSchema['attrs'] = {}): OpSchema => ({ opType, attrs, inputs: [1, 1], infer: (ctx) => same(ctx) });

export const elementwiseOps: OpSchema[] = [
  ...['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min'].map((o) => binary(o)),
  ...['Equal', 'Greater', 'Less', 'GreaterOrEqual', 'LessOrEqual'].map(compare),
  ...['And', 'Or'].map((o) => binary(o)),
  // fmod=1 is required for floating-point operands (C fmod: the result takes the dividend's sign).
  binary('Mod', { fmod: 'int' }),
  ...['Relu', 'Sigmoid', 'Tanh', 'Exp', 'Log', 'Sqrt', 'Neg', 'Abs', 'Identity', 'Reciprocal', 'Floor', 'Ceil', 'Round', 'Erf', 'Softplus', 'Sign', 'Not', 'Sin', 'Cos'].map(
    (o) => unary(o),
  ),
  unary('LeakyRelu', { alpha: 'float' }),
  unary('Elu', { alpha: 'float' }),
  // Opset 13+: normalises along one axis (default -1), not over the flattened trailing dims.
  unary('Softmax', { axis: 'int' }),
  {
    opType: 'Clip',
    attrs: {},
    inputs: [1, 3],
    infer: (ctx) => same(ctx),
  },
  {
    opType: 'Cast',
    attrs: { to: 'int' },
    inputs: [1, 1],
    infer: (ctx) => {
      const to = ctx.attr<number>('to');
      const map: Record<number, 'float32' | 'float64' | 'int64' | 'int32' | 'uint8' | 'int8' | 'bool'> = { 1: 'float32', 11: 'float64', 7: 'int64', 6: 'int32', 2: 'uint8', 3: 'int8', 9: 'bool' };
      const dtype = map[to] ?? ctx.fail(`cast to ONNX type ${to} is not supported`);
      return [{ dtype, shape: [...ctx.input(0).shape] }];
    },
  },
  {
    opType: 'Where',
    attrs: {},
    inputs: [3, 3],
    infer: (ctx) => {
      const [c, a, b] = [ctx.input(0), ctx.input(1), ctx.input(2)];
      if (c.dtype !== 'bool') ctx.fail('condition must be bool');
      if (a.dtype !== b.dtype) ctx.fail(`branch types differ (${a.dtype} vs ${b.dtype})`);
      return [{ dtype: a.dtype, shape: broadcastShapes(broadcastShapes(c.shape, a.shape, ctx), b.shape, ctx) }];
    },
  },
];
