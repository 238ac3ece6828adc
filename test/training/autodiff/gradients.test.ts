import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tensor, type Graph, type Value } from '../../../src/models/onnx/index.js';
import { GRAD_RULES } from '../../../src/training/engine/autodiff/rules/index.js';
import { buildGradients } from '../../../src/training/engine/autodiff/engine.js';
import { newGraph } from '../../../src/models/onnx/index.js';
import { repoRoot } from '../../helpers/paths.js';
import { fdCheck, type InputSpec } from './fd-check.js';

type Case = [name: string, inputs: InputSpec[], build: (g: Graph, x: Value[]) => Value];

const ints = (g: Graph, v: number[]): Value => g.initializer('k', tensor('int64', [v.length], v));
const c = (g: Graph, v: number, like: Value): Value => g.initializer('c', tensor(like.dtype, [], [v]));
const I = (shape: number[], init?: InputSpec['init']): InputSpec => ({ shape, init });

const convCase = (name: string, n: number, cin: number, h: number, w: number, cout: number, k: number, s: number, p: number, d: number, groups: number, bias = true): Case => [
  name,
  [I([n, cin, h, w]), I([cout, cin / groups, k, k]), ...(bias ? [I([cout])] : [])],
  (g, x) => g.op('Conv', [x[0], x[1], x[2]], { kernel_shape: [k, k], strides: [s, s], pads: [p, p, p, p], dilations: [d, d], group: groups }),
];

const convTCase = (name: string, n: number, cin: number, h: number, w: number, cout: number, k: number, s: number, p: number, op: number, groups: number): Case => [
  name,
  [I([n, cin, h, w]), I([cin, cout / groups, k, k]), I([cout])],
  (g, x) => g.op('ConvTranspose', [x[0], x[1], x[2]], { kernel_shape: [k, k], strides: [s, s], pads: [p, p, p, p], group: groups, output_padding: [op, op] }),
];

const CASES: Case[] = [
  convTCase('ConvTranspose k3 s2 p1 output_padding 1', 2, 3, 4, 5, 4, 3, 2, 1, 1, 1),
  ['Add broadcast [2,3,4]+[3,1]', [I([2, 3, 4]), I([3, 1])], (g, x) => g.op('Add', [x[0], x[1]])],
  ['Sub broadcast [3,4]-[4]', [I([3, 4]), I([4])], (g, x) => g.op('Sub', [x[0], x[1]])],
  ['Mul broadcast [2,1,4]*[3,1]', [I([2, 1, 4]), I([3, 1])], (g, x) => g.op('Mul', [x[0], x[1]])],
  ['Div broadcast [3,4]/[1,4]', [I([3, 4]), I([1, 4], 'awayFromZero')], (g, x) => g.op('Div', [x[0], x[1]])],
  ['Neg', [I([5])], (g, x) => g.op('Neg', [x[0]])],
  ['Identity', [I([2, 3])], (g, x) => g.op('Identity', [x[0]])],
  ['Relu', [I([3, 5], 'awayFromZero')], (g, x) => g.op('Relu', [x[0]])],
  ['LeakyRelu 0.2', [I([3, 5], 'awayFromZero')], (g, x) => g.op('LeakyRelu', [x[0]], { alpha: 0.2 })],
  ['Elu', [I([3, 5], 'awayFromZero')], (g, x) => g.op('Elu', [x[0]], { alpha: 1 })],
  ['Sigmoid', [I([7])], (g, x) => g.op('Sigmoid', [x[0]])],
  ['Tanh', [I([7])], (g, x) => g.op('Tanh', [x[0]])],
  ['Exp', [I([7])], (g, x) => g.op('Exp', [x[0]])],
  ['Log', [I([7], 'positive')], (g, x) => g.op('Log', [x[0]])],
  ['Sqrt', [I([7], 'positive')], (g, x) => g.op('Sqrt', [x[0]])],
  ['Pow x^3', [I([6])], (g, x) => g.op('Pow', [x[0], c(g, 3, x[0])])],
  ['Pow x^0.5', [I([6], 'positive')], (g, x) => g.op('Pow', [x[0], c(g, 0.5, x[0])])],
  ['Abs', [I([9], 'awayFromZero')], (g, x) => g.op('Abs', [x[0]])],
  ['Clip [-0.5, 0.7]', [{ shape: [12], data: [-2, -1, -0.7, -0.3, -0.1, 0.1, 0.3, 0.5, 0.9, 1.2, 2, -0.45] }], (g, x) => g.op('Clip', [x[0], c(g, -0.5, x[0]), c(g, 0.7, x[0])])],
  ['Max broadcast', [I([3, 4]), I([4])], (g, x) => g.op('Max', [x[0], x[1]])],
  ['Min broadcast', [I([3, 4]), I([3, 1])], (g, x) => g.op('Min', [x[0], x[1]])],
  ['Where', [I([3, 4]), I([4])], (g, x) => g.op('Where', [g.initializer('cond', tensor('bool', [3, 4], [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0])), x[0], x[1]])],
  ['Cast round trip through float64', [I([5])], (g, x) => g.op('Cast', [g.op('Cast', [x[0]], { to: 11 })], { to: x[0].dtype === 'float64' ? 11 : 1 })],
  ['MatMul [3,4]x[4,5]', [I([3, 4]), I([4, 5])], (g, x) => g.op('MatMul', [x[0], x[1]])],
  ['MatMul batched [2,3,4]x[4,5]', [I([2, 3, 4]), I([4, 5])], (g, x) => g.op('MatMul', [x[0], x[1]])],
  ['MatMul batched [2,3,4]x[2,4,5]', [I([2, 3, 4]), I([2, 4, 5])], (g, x) => g.op('MatMul', [x[0], x[1]])],
  ...[0, 1].flatMap((tA) =>
    [0, 1].map(
      (tB): Case => [
        `Gemm transA=${tA} transB=${tB} alpha/beta, C broadcast`,
        [I(tA ? [4, 3] : [3, 4]), I(tB ? [5, 4] : [4, 5]), I([5])],
        (g, x) => g.op('Gemm', [x[0], x[1], x[2]], { transA: tA, transB: tB, alpha: 0.7, beta: 1.3 }),
      ],
    ),
  ),
  convCase('Conv k3 s1 p1', 2, 3, 7, 6, 4, 3, 1, 1, 1, 1),
  convCase('Conv k5 s2 p2 odd sizes', 1, 2, 9, 7, 3, 5, 2, 2, 1, 1),
  convCase('Conv k3 dilation 2, no bias', 1, 2, 9, 8, 2, 3, 1, 0, 2, 1, false),
  convCase('Conv groups 2', 2, 4, 6, 5, 6, 3, 1, 1, 1, 2),
  convCase('Conv depthwise (groups = channels)', 1, 3, 6, 7, 3, 3, 2, 1, 1, 3),
  convTCase('ConvTranspose k7 s2 p2 (CNN core)', 1, 3, 4, 5, 2, 7, 2, 2, 0, 1),
  convTCase('ConvTranspose k4 s1 p1', 2, 2, 3, 4, 3, 4, 1, 1, 0, 1),
  convTCase('ConvTranspose s3 output_padding 1, groups 2', 1, 4, 3, 3, 2, 3, 3, 1, 1, 2),
  ['AveragePool k3 s1 p1 (pad excluded)', [I([1, 2, 5, 6])], (g, x) => g.op('AveragePool', [x[0]], { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1] })],
  ['AveragePool k2 s2', [I([2, 1, 6, 4])], (g, x) => g.op('AveragePool', [x[0]], { kernel_shape: [2, 2], strides: [2, 2] })],
  ['AveragePool k3 s2 p1 count_include_pad', [I([1, 2, 7, 5])], (g, x) => g.op('AveragePool', [x[0]], { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1], count_include_pad: 1 })],
  ['ReduceMean axis 1 keepdims', [I([2, 3, 4])], (g, x) => g.op('ReduceMean', [x[0]], { axes: [1], keepdims: 1 })],
  ['ReduceMean axes [0,2] drop', [I([2, 3, 4])], (g, x) => g.op('ReduceMean', [x[0]], { axes: [0, 2], keepdims: 0 })],
  ['ReduceMean all', [I([3, 5])], (g, x) => g.op('ReduceMean', [x[0]], { keepdims: 0 })],
  ['ReduceSum axis -1 drop', [I([2, 3, 4])], (g, x) => g.op('ReduceSum', [x[0], ints(g, [-1])], { keepdims: 0 })],
  ['ReduceSumSquare axis 1', [I([2, 3, 4])], (g, x) => g.op('ReduceSumSquare', [x[0]], { axes: [1], keepdims: 1 })],
  ['ReduceMax axis 1', [I([2, 5, 3])], (g, x) => g.op('ReduceMax', [x[0]], { axes: [1], keepdims: 0 })],
  ['ReduceMin all, keepdims', [I([3, 4])], (g, x) => g.op('ReduceMin', [x[0]], { axes: [0, 1], keepdims: 1 })],
  ['Reshape', [I([2, 3, 4])], (g, x) => g.op('Reshape', [x[0], ints(g, [4, -1])])],
  ['Flatten axis 2', [I([2, 3, 4, 2])], (g, x) => g.op('Flatten', [x[0]], { axis: 2 })],
  ['Transpose', [I([2, 3, 4])], (g, x) => g.op('Transpose', [x[0]], { perm: [2, 0, 1] })],
  ['Unsqueeze', [I([3, 4])], (g, x) => g.op('Unsqueeze', [x[0], ints(g, [0, 3])])],
  ['Squeeze', [I([3, 1, 4, 1])], (g, x) => g.op('Squeeze', [x[0], ints(g, [1, 3])])],
  ['Slice negative start, two axes', [I([4, 7, 5])], (g, x) => g.op('Slice', [x[0], ints(g, [1, -4]), ints(g, [3, 6]), ints(g, [0, 1])])],
  ['Concat axis 1', [I([2, 3]), I([2, 1]), I([2, 4])], (g, x) => g.op('Concat', x, { axis: 1 })],
  ['Pad constant', [I([2, 3, 4])], (g, x) => g.op('Pad', [x[0], ints(g, [0, 1, 2, 0, 2, 1])], { mode: 'constant' })],
  ['Pad reflect, two axes', [I([1, 2, 5, 6])], (g, x) => g.op('Pad', [x[0], ints(g, [0, 0, 2, 3, 0, 0, 3, 1])], { mode: 'reflect' })],
  [
    'BatchNormalization (inference form, gradient w.r.t. x)',
    [
      I([2, 3, 4, 5]),
      { shape: [3], constant: true, data: [0.5, -1.5, 2] },
      { shape: [3], constant: true, data: [0.1, 0, -0.3] },
      { shape: [3], constant: true, data: [0.2, -0.4, 1] },
      { shape: [3], constant: true, data: [0.5, 2, 1.5] },
    ],
    (g, x) => g.op('BatchNormalization', x, { epsilon: 1e-3 }),
  ],
  ['Floor inside x - floor(x) (bilinear weights)', [I([3, 5])], (g, x) => g.op('Mul', [g.op('Sub', [x[0], g.op('Floor', [x[0]])]), x[0]])],
  ['Gather axis 1, repeated and negative indices', [I([3, 5, 2])], (g, x) => g.op('Gather', [x[0], ints(g, [0, 4, 4, -1, 2])], { axis: 1 })],
  ['Gather axis 0, 2-D indices (one-hot path)', [I([4, 3])], (g, x) => g.op('Gather', [x[0], g.initializer('k', tensor('int64', [2, 2], [3, 0, 3, 1]))], { axis: 0 })],
  [
    'GatherElements axis 1',
    [I([3, 4]), { shape: [3, 2], dtype: 'int64', constant: true, data: [0, 3, 2, 2, 1, 0] }],
    (g, x) => g.op('GatherElements', [x[0], x[1]], { axis: 1 }),
  ],
];

describe('every gradient rule agrees with central finite differences', () => {
  const float32Only: string[] = [];
  afterAll(() => {
    // ORT has no float64 kernel for these; they were checked in float32 with the looser tolerance.
    if (float32Only.length) console.info(`finite differences in float32 (no float64 kernel in ORT): ${float32Only.join(', ')}`);
  });
  it.each(CASES)('%s', async (name, inputs, build) => {
    const r = await fdCheck(inputs, build);
    if (r.dtype === 'float32') float32Only.push(name);
    expect(r.checked).toBeGreaterThan(0);
    expect(r.worst).toBeLessThanOrEqual(1);
  });

  it('covers every registered rule', () => {
    const tested = new Set(CASES.map(([name]) => name.split(' ')[0]));
    for (const r of GRAD_RULES) expect(tested.has(r.opType), `no finite-difference case for ${r.opType}`).toBe(true);
  });

  it('every rule file holds rules whose opType is a known op', () => {
    const dir = join(repoRoot, 'src/training/engine/autodiff/rules');
    const files = readdirSync(dir).filter((f) => f.endsWith('.ts') && f !== 'index.ts' && !f.endsWith('-util.ts'));
    expect(files.length).toBeGreaterThanOrEqual(30);
    const g = newGraph('t');
    for (const r of GRAD_RULES) expect(() => g.op(r.opType, [])).toThrow(/takes|required|inputs/);
  });
});

describe('engine checks', () => {
  it('names the op and node when a rule is missing', () => {
    const g = newGraph('t');
    const x = g.input('x', 'float32', [3]);
    const y = g.op('Softplus', [x], {}, { name: 'readin/softplus' });
    const loss = g.op('ReduceSum', [y], { keepdims: 0 });
    expect(() => buildGradients(g, loss, [x])).toThrow(/no gradient rule for op 'Softplus' \(node readin\/softplus\)/);
  });

  it('refuses a loss that does not depend on the parameters', () => {
    const g = newGraph('t');
    const x = g.input('x', 'float32', [3]);
    const w = g.input('w', 'float32', [3]);
    const loss = g.op('ReduceSum', [x], { keepdims: 0 });
    expect(() => buildGradients(g, loss, [w])).toThrow(/does not depend on any of w/);
  });
});
