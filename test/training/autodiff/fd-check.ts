import type ort from 'onnxruntime-node';
import { newGraph, tensor, type DType, type Graph, type Value, type TensorData } from '../../../src/models/onnx/index.js';
import { createSession, runOnce } from '../../../src/models/ort.js';
import { buildGradients } from '../../../src/training/engine/autodiff/engine.js';
import { randn } from '../../helpers/reference.js';

export type Init = 'normal' | 'positive' | 'awayFromZero';

export interface InputSpec {
  shape: number[];
  init?: Init;
  /** Not differentiated (indices, conditions, constants fed as inputs). */
  constant?: boolean;
  dtype?: DType;
  data?: ArrayLike<number>;
}

export interface FdResult {
  dtype: DType;
  worst: number;
  checked: number;
}

function fill(spec: InputSpec, seed: number): number[] {
  if (spec.data) return Array.from(spec.data);
  const n = spec.shape.reduce((a, b) => a * b, 1);
  return Array.from(randn(n, seed), (v) => (spec.init === 'positive' ? Math.abs(v) + 0.5 : spec.init === 'awayFromZero' ? Math.sign(v || 1) * (Math.abs(v) + 0.2) : v));
}

/**
 * Central finite differences against the autodiff engine. loss = sum(y * R) for a fixed random R,
 * so every output element's gradient is exercised. float64 where ORT has kernels for every op, else
 * float32 with a looser tolerance (reported in the result).
 */
export async function fdCheck(inputs: InputSpec[], build: (g: Graph, xs: Value[]) => Value, opts: { samples?: number } = {}): Promise<FdResult> {
  for (const dtype of ['float64', 'float32'] as const) {
    let built;
    try {
      built = await compile(inputs, build, dtype);
    } catch (e) {
      if (dtype === 'float64' && /NOT_IMPLEMENTED|Could not find an implementation|not supported|type.*mismatch|Type Error/i.test(String((e as Error).message))) continue;
      throw e;
    }
    const { session, feeds, diffIdx } = built;
    const eps = dtype === 'float64' ? 1e-6 : 2e-3;
    const [atol, rtol] = dtype === 'float64' ? [1e-7, 1e-5] : [3e-3, 3e-2];
    const base = await runOnce(session, feeds);
    let worst = 0;
    let checked = 0;
    for (const k of diffIdx) {
      const name = `x${k}`;
      const analytic = base[`grad_${name}`].data as Float64Array;
      const data = feeds[name].data as Float64Array;
      const n = data.length;
      const picks = n <= (opts.samples ?? 16) ? [...Array(n).keys()] : Array.from({ length: opts.samples ?? 16 }, (_, i) => Math.floor((i * 7919 + 13) % n));
      for (const i of picks) {
        const orig = data[i];
        data[i] = orig + eps;
        const lp = Number((await runOnce(session, feeds)).loss.data[0]);
        data[i] = orig - eps;
        const lm = Number((await runOnce(session, feeds)).loss.data[0]);
        data[i] = orig;
        const numeric = (lp - lm) / (2 * eps);
        const err = Math.abs(analytic[i] - numeric) / (atol + rtol * Math.abs(numeric));
        worst = Math.max(worst, err);
        checked++;
        if (err > 1) throw new Error(`${dtype}: d loss / d ${name}[${i}] analytic ${analytic[i]} vs numeric ${numeric}`);
      }
    }
    return { dtype, worst, checked };
  }
  throw new Error('unreachable');
}

async function compile(inputs: InputSpec[], build: (g: Graph, xs: Value[]) => Value, dtype: DType): Promise<{ session: ort.InferenceSession; feeds: Record<string, TensorData>; diffIdx: number[] }> {
  const g = newGraph('fd');
  const xs = inputs.map((s, k) => g.input(`x${k}`, s.dtype ?? dtype, s.shape));
  const y = build(g, xs);
  const shape = y.shape.map((d) => {
    if (typeof d !== 'number') throw new Error('fdCheck needs static output shapes');
    return d;
  });
  const r = g.initializer('R', tensor(y.dtype, shape, randn(shape.reduce((a, b) => a * b, 1), 99)));
  const loss = g.op('ReduceSum', [g.op('Mul', [y, r])], { keepdims: 0 });
  g.output(loss, 'loss');
  const diffIdx = inputs.flatMap((s, k) => (s.constant ? [] : [k]));
  const grads = buildGradients(g, loss, diffIdx.map((k) => xs[k]));
  for (const k of diffIdx) g.output(grads.get(xs[k].name)!, `grad_x${k}`);
  const { session } = await createSession(g, { intraOpThreads: 1 });
  const feeds: Record<string, TensorData> = {};
  inputs.forEach((s, k) => {
    const dt = s.dtype ?? dtype;
    feeds[`x${k}`] = tensor(dt, s.shape, dt === 'int64' ? fill(s, k + 1).map(Math.round) : Float64Array.from(fill(s, k + 1)));
    if (dt === 'float32') feeds[`x${k}`] = tensor('float32', s.shape, Float32Array.from(fill(s, k + 1)));
  });
  // Float32 runs still perturb through a float64 view for the numeric side.
  if (dtype === 'float32') for (const k of diffIdx) feeds[`x${k}`] = { ...feeds[`x${k}`], data: Float32Array.from(feeds[`x${k}`].data as Float32Array) };
  return { session, feeds, diffIdx };
}
