import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { readNpy, writeNpy } from '../../common/npy.js';
import { int64s, type LayerContext } from '../../models/layers.js';
import { newGraph, tensor, writeModel, GraphError, type Graph, type TensorData, type Value } from '../../models/onnx/index.js';
import { createSession, fromOrt, toOrt, type ExecutionProvider } from '../../models/ort.js';
import { Rng } from '../../models/rng.js';
import { buildGradients } from './autodiff/engine.js';
import { groupOf, stateNames, updateNodes, type OptimizerConfig, type ParamGroup } from './optim.js';
import { constantLr, type LrSchedule } from './schedule.js';
import { z } from 'zod';
import { ccError } from '../../common/errors.js';
import { readJsonFile } from '../../common/json-file.js';

/** checkpoint.json as saveCheckpoint writes it; resume refuses anything else with the field named. */
const CHECKPOINT_JSON = z
  .object({
    format: z.literal('cortexcast-checkpoint'),
    formatVersion: z.number().int().min(1).max(1),
    step: z.number().int().min(0),
    seed: z.number(),
    tensors: z.record(z.string(), z.string()),
    extra: z.record(z.string(), z.unknown()),
  })
  .passthrough();

/** What a model is, independent of mode: called once for the training graph and once for export. */
export type ModelBuilder = (ctx: LayerContext, batch: number | 'batch') => { inputs: Value[]; output: Value };

/** The training objective on top of the model's output: target inputs, the loss, optional metrics. */
export type Objective = (
  ctx: LayerContext,
  output: Value,
) => { targets: Value[]; loss: Value; metrics?: Record<string, Value>; /** Tensors returned by every step (e.g. the GAN's fakes). */ outputs?: Record<string, Value> };

export interface TrainingSpec {
  name: string;
  /** Training graphs have a fixed batch (batch norm statistics and dropout masks need it). */
  batch: number;
  /** Seeds weight init (same in train and export graphs) and the dropout stream. */
  seed: number;
  model: ModelBuilder;
  objective: Objective;
  groups?: ParamGroup[];
  optimizer?: OptimizerConfig;
  /** Model inputs whose gradient the step returns (image optimisation through a frozen network). */
  inputGradients?: string[];
  providers?: ExecutionProvider[];
  threads?: number;
  /**
   * Parameters with at least this many elements are updated host-side: the graph returns their gradient
   * into a reused buffer and one fused, in-place AdamW/SGD pass in JavaScript applies the same update as
   * the graph would. Measured on the paper CNN's 316M-element readin: an in-graph update allocates a
   * fresh 1.3 GB buffer per elementwise op and first-touch page faults made it ~40 s a step.
   * Default 32M elements; Infinity keeps every update in the graph.
   */
  hostUpdateMinElements?: number;
  /** Elements per gradient chunk of host-updated parameters (default HOST_GRAD_CHUNK, 16 MB). */
  hostGradChunkElements?: number;
  /**
   * ORT's CPU memory arena. On, steps ran 1.5x faster (no page faults on fresh buffers), but the arena
   * rounds gigabyte allocations up and keeps its peak: the paper CNN (1.3 GB readin) then outgrew 24 GB.
   * Default: on when the parameters updated in the graph (not host-side) total under 256 MB.
   */
  cpuArena?: boolean;
  /** Name of the exported graph's output (default 'output'). */
  outputName?: string;
  /** Write ORT's per-node profile of the training session to files with this prefix (`endProfiling()`). */
  profilePrefix?: string;
}

export interface StepResult {
  loss: number;
  metrics: Record<string, number>;
  /** Gradients with respect to the requested inputs. */
  inputGradients: Record<string, Float32Array>;
  /** The objective's extra outputs of this step (before the update). */
  outputs: Record<string, ort.Tensor>;
  ms: number;
  /** Of `ms`: the host-side optimizer pass (the rest is ORT's run and feeding it). */
  hostMs: number;
}

const NEXT = ':next';

/**
 * Host-updated parameters' gradients leave the graph in 1-D chunks of at most this many elements
 * (16 MB). onnxruntime-node copies every output into a fresh ArrayBuffer; glibc serves blocks this size
 * from its heap and reuses them next step, where one 1.3 GB output was a fresh mapping each step whose
 * page faults cost ~4 s on this project's VM (paper CNN step 15.3 -> ~10 s).
 */
export const HOST_GRAD_CHUNK = 4 * 2 ** 20;

/** [offset, length] of each gradient chunk of an n-element host-updated parameter. */
export function hostGradChunks(n: number, chunk = HOST_GRAD_CHUNK): [number, number][] {
  const out: [number, number][] = [];
  for (let off = 0; off < n; off += chunk) out.push([off, Math.min(chunk, n - off)]);
  return out;
}

interface CompiledTraining {
  graph: Graph;
  trainable: string[];
  /** Tensors fed in each step and returned as `<name>:next` (ping-pong buffers). */
  stateTensors: string[];
  /** Parameters updated host-side; their gradient comes out as `grad:<name>`. */
  hostParams: string[];
  groups: ParamGroup[];
  lrInputs: string[];
  initial: Map<string, TensorData>;
  metricNames: string[];
  outputNames: string[];
  /** Parameters fed by the caller every step (groups marked external). */
  externalParams: string[];
}

/**
 * Build the training graph: the model in training mode, its objective, reverse-mode gradients and the
 * optimizer update, with parameters, optimizer state and running statistics as inputs and their
 * next values as outputs.
 */
export function compileTraining(spec: TrainingSpec): CompiledTraining {
  const g = newGraph(`${spec.name}_train`);
  const params: string[] = [];
  const state = new Map<string, Value | undefined>();
  const dropoutSeed = g.input('dropout_seed', 'float64', []);
  const ctx: LayerContext = { g, rng: new Rng(spec.seed), mode: 'train', dropoutSeed, params, state };
  const { inputs, output } = spec.model(ctx, spec.batch);
  const obj = spec.objective(ctx, output);
  const groups = spec.groups ?? [{ match: '', lr: 1e-3 }];
  const opt: OptimizerConfig = spec.optimizer ?? { kind: 'adamw' };
  const initial = new Map<string, TensorData>();
  const trainable: Value[] = [];
  const externalParams: string[] = [];
  for (const p of params) {
    const gi = groupOf(groups, p);
    if (gi < 0) throw new GraphError(`parameter '${p}' matches no parameter group`);
    if (groups[gi].frozen) continue;
    if (groups[gi].external) {
      g.promoteToInput(p);
      externalParams.push(p);
      continue;
    }
    initial.set(p, g.initializers.get(p)!.tensor);
    trainable.push(g.promoteToInput(p));
  }
  for (const s of state.keys()) {
    initial.set(s, g.initializers.get(s)!.tensor);
    g.promoteToInput(s);
  }
  g.output(obj.loss, 'loss');
  const metricNames = Object.keys(obj.metrics ?? {});
  for (const [k, v] of Object.entries(obj.metrics ?? {})) g.output(v, `metric:${k}`);
  const outputNames = Object.keys(obj.outputs ?? {});
  for (const [k, v] of Object.entries(obj.outputs ?? {})) g.output(v, `out:${k}`);
  const wantInputs = (spec.inputGradients ?? []).map((n) => inputs.find((v) => v.name === n) ?? g.value(n));
  const wrt = [...trainable, ...wantInputs];
  const grads = wrt.length ? buildGradients(g, obj.loss, wrt) : new Map<string, Value>();
  for (const v of wantInputs) g.output(grads.get(v.name)!, `grad:${v.name}`);
  const step = g.input('step', 'float32', []);
  const lrInputs = groups.map((_, i) => `lr:${i}`);
  const lrs = lrInputs.map((n) => g.input(n, 'float32', []));
  const hostMin = spec.hostUpdateMinElements ?? 32 * 2 ** 20;
  const hostParams: string[] = [];
  g.scope('optimizer', () => {
    for (const p of trainable) {
      const n = initial.get(p.name)!.data.length;
      if (n >= hostMin) {
        hostParams.push(p.name);
        const flat = g.op('Reshape', [grads.get(p.name)!, int64s(g, 'shape', [-1])]);
        hostGradChunks(n, spec.hostGradChunkElements).forEach(([off, len], k) =>
          g.outputAs(g.op('Slice', [flat, int64s(g, 'starts', [off]), int64s(g, 'ends', [off + len])]), `grad:${p.name}:${k}`),
        );
        continue;
      }
      const gi = groupOf(groups, p.name);
      const names = stateNames(opt.kind, p.name);
      const st = names.map((n) => {
        initial.set(n, tensor(p.dtype, p.shape as number[]));
        return g.input(n, p.dtype, p.shape);
      });
      const outNames = { param: p.name + NEXT, state: names.map((n) => n + NEXT) };
      const upd = g.scope(p.name, () => updateNodes(g, opt, p, grads.get(p.name)!, st, lrs[gi], step, groups[gi], outNames));
      g.output(upd.param);
      upd.state.forEach((v) => g.output(v));
    }
  });
  for (const [s, next] of state) {
    if (!next) throw new GraphError(`state '${s}' has no training-mode update`);
    g.output(next, s + NEXT);
  }
  const stateTensors = [...initial.keys()].filter((k) => !hostParams.includes(k));
  return { graph: g, trainable: trainable.map((v) => v.name), stateTensors, hostParams, groups, lrInputs, initial, metricNames, outputNames, externalParams };
}

/** The model in eval mode with the given tensors as initializers (or as inputs, for the eval session). */
export function buildEvalGraph(spec: TrainingSpec, values: Map<string, TensorData>, asInputs: boolean): { graph: Graph; inputs: Value[]; output: Value } {
  const g = newGraph(spec.name);
  const params: string[] = [];
  const state = new Map<string, Value | undefined>();
  const ctx: LayerContext = { g, rng: new Rng(spec.seed), mode: 'eval', params, state };
  const { inputs, output } = spec.model(ctx, 'batch');
  for (const name of [...params, ...state.keys()]) {
    const t = values.get(name);
    if (!t) continue; // frozen: keeps its built value
    if (asInputs) g.promoteToInput(name);
    else g.setInitializer(name, t);
  }
  g.output(output, spec.outputName ?? 'output');
  return { graph: g, inputs, output };
}

/**
 * Holds parameters, optimizer state and running statistics between steps as ONNX Runtime tensors in
 * two buffer sets: each step reads one set and ORT writes the next values into the other
 * (pre-allocated outputs), then they swap, so ORT allocates no buffers for them (the paper-size CNN
 * carries ~4 GB of such state). onnxruntime-node 1.30 still copies every output into a fresh
 * ArrayBuffer after the run, which we drop (hence HOST_GRAD_CHUNK for the gigabyte gradients).
 */
export class TrainingSession {
  step = 0;
  schedule: LrSchedule = constantLr();
  lastStepMs = 0;

  private constructor(
    readonly spec: TrainingSpec,
    private readonly compiled: CompiledTraining,
    private readonly session: ort.InferenceSession,
    private state: Map<string, ort.Tensor>,
    readonly provider: ExecutionProvider,
  ) {
    for (const k of compiled.stateTensors) {
      const v = state.get(k)!;
      this.spare.set(k, new ort.Tensor('float32', new Float32Array(v.size), v.dims));
    }
    const kind = (spec.optimizer ?? { kind: 'adamw' }).kind;
    for (const p of compiled.hostParams) {
      const v = state.get(p)!;
      this.hostGrad.set(p, hostGradChunks(v.size, spec.hostGradChunkElements).map(([, len]) => new ort.Tensor('float32', new Float32Array(len), [len])));
      for (const n of stateNames(kind, p)) this.hostState.set(n, new Float32Array(v.size));
    }
  }

  /** The buffers ORT writes the next step's state into. */
  private spare = new Map<string, ort.Tensor>();
  /** Host-updated parameters: gradient buffers (reused) and optimizer state, by state name. */
  private hostGrad = new Map<string, ort.Tensor[]>();
  private hostState = new Map<string, Float32Array>();

  static async create(spec: TrainingSpec): Promise<TrainingSession> {
    const compiled = compileTraining(spec);
    // Only parameters updated inside the graph make the arena hold gigabyte blocks (their optimizer
    // temporaries); host-updated ones never pass through it.
    let graphParamBytes = 0;
    for (const p of compiled.trainable) if (!compiled.hostParams.includes(p)) graphParamBytes += compiled.initial.get(p)!.data.byteLength;
    const cpuArena = spec.cpuArena ?? graphParamBytes < 256 * 2 ** 20;
    const { session, provider } = await createSession(writeModel(compiled.graph), { providers: spec.providers, intraOpThreads: spec.threads, cpuArena, profilePrefix: spec.profilePrefix });
    const state = new Map<string, ort.Tensor>();
    for (const [k, v] of compiled.initial) state.set(k, toOrt(v));
    return new TrainingSession(spec, compiled, session, state, provider);
  }

  get parameterNames(): string[] {
    return this.compiled.trainable;
  }

  get parameterCount(): number {
    return this.compiled.trainable.reduce((n, p) => n + (this.state.get(p)!.size ?? 0), 0);
  }

  /** Learning rates in force for the next step, per group. */
  currentLrs(): number[] {
    const f = this.schedule.factor(this.step);
    return this.compiled.groups.map((gr) => gr.lr * f);
  }

  /**
   * One optimisation step on a batch. Feeds: model inputs and objective targets by name; `tensors`:
   * ORT tensors passed as they are (external parameters, from another session's `currentTensors`).
   */
  async trainStep(feeds: Record<string, TensorData>, tensors: Record<string, ort.Tensor> = {}): Promise<StepResult> {
    const t0 = performance.now();
    const inputs: Record<string, ort.Tensor> = { ...tensors };
    for (const [k, v] of Object.entries(feeds)) inputs[k] = toOrt(v);
    for (const p of this.compiled.externalParams) if (!inputs[p]) throw new Error(`${this.spec.name}: external parameter '${p}' was not fed`);
    for (const [k, v] of this.state) inputs[k] = v;
    this.step += 1;
    inputs.step = new ort.Tensor('float32', Float32Array.of(this.step), []);
    inputs.dropout_seed = new ort.Tensor('float64', Float64Array.of(((this.spec.seed * 7919 + this.step) % 1_000_003) + 0.5), []);
    const lrs = this.currentLrs();
    this.compiled.lrInputs.forEach((n, i) => (inputs[n] = new ort.Tensor('float32', Float32Array.of(lrs[i]), [])));
    const fetches: Record<string, ort.Tensor | null> = { loss: null };
    for (const m of this.compiled.metricNames) fetches[`metric:${m}`] = null;
    for (const m of this.compiled.outputNames) fetches[`out:${m}`] = null;
    for (const n of this.spec.inputGradients ?? []) fetches[`grad:${n}`] = null;
    for (const k of this.compiled.stateTensors) fetches[k + NEXT] = this.spare.get(k)!;
    for (const [p, chunks] of this.hostGrad) chunks.forEach((t, k) => (fetches[`grad:${p}:${k}`] = t));
    const out = await this.session.run(inputs, fetches);
    for (const k of this.compiled.stateTensors) {
      const next = this.spare.get(k)!;
      this.spare.set(k, this.state.get(k)!);
      this.state.set(k, next);
    }
    const tHost = performance.now();
    for (const p of this.compiled.hostParams) this.hostUpdate(p, lrs);
    const hostMs = performance.now() - tHost;
    const metrics: Record<string, number> = {};
    for (const m of this.compiled.metricNames) metrics[m] = Number(out[`metric:${m}`].data[0]);
    const inputGradients: Record<string, Float32Array> = {};
    for (const n of this.spec.inputGradients ?? []) inputGradients[n] = out[`grad:${n}`].data as Float32Array;
    const outputs: Record<string, ort.Tensor> = {};
    for (const m of this.compiled.outputNames) outputs[m] = out[`out:${m}`];
    this.lastStepMs = performance.now() - t0;
    return { loss: Number(out.loss.data[0]), metrics, inputGradients, outputs, ms: this.lastStepMs, hostMs };
  }

  /** The graph's optimizer update, fused into one in-place pass (see TrainingSpec.hostUpdateMinElements). */
  private hostUpdate(p: string, lrs: number[]): void {
    const opt = this.spec.optimizer ?? { kind: 'adamw' };
    const gi = groupOf(this.compiled.groups, p);
    const group = this.compiled.groups[gi];
    const lr = Math.fround(lrs[gi]);
    const wd = group.weightDecay ?? 0;
    const clamp = group.clamp ?? Infinity;
    const w = this.state.get(p)!.data as Float32Array;
    const [s0, s1] = stateNames(opt.kind, p).map((n) => this.hostState.get(n)!);
    const chunks = this.hostGrad.get(p)!;
    if (opt.kind === 'sgd') {
      const mu = opt.momentum ?? 0.9;
      let i = 0;
      for (const chunk of chunks) {
        const grad = chunk.data as Float32Array;
        for (let j = 0; j < grad.length; j++, i++) {
          const gc = Math.min(clamp, Math.max(-clamp, grad[j])) + wd * w[i];
          const b = (s0[i] = mu * s0[i] + gc);
          w[i] -= lr * b;
        }
      }
      return;
    }
    const b1 = opt.beta1 ?? 0.9;
    const b2 = opt.beta2 ?? 0.999;
    const sqrtBc2 = Math.sqrt(1 - b2 ** this.step);
    const stepSize = (lr * sqrtBc2) / (1 - b1 ** this.step);
    const epsHat = (opt.eps ?? 1e-8) * sqrtBc2;
    const decay = 1 - lr * wd;
    let i = 0;
    for (const chunk of chunks) {
      const grad = chunk.data as Float32Array;
      for (let j = 0; j < grad.length; j++, i++) {
        const gc = Math.min(clamp, Math.max(-clamp, grad[j]));
        const m = (s0[i] = b1 * s0[i] + (1 - b1) * gc);
        const v = (s1[i] = b2 * s1[i] + (1 - b2) * gc * gc);
        w[i] = w[i] * decay - (stepSize * m) / (Math.sqrt(v) + epsHat);
      }
    }
  }

  /** Stop ORT's profiler (spec.profilePrefix); the trace is `<prefix>_<date>.json` in the working folder. */
  endProfiling(): void {
    this.session.endProfiling();
  }

  /** The current tensors of these parameters or statistics, as held (no copy; valid until the next step). */
  currentTensors(names: readonly string[]): Record<string, ort.Tensor> {
    const out: Record<string, ort.Tensor> = {};
    for (const n of names) {
      const t = this.state.get(n);
      if (!t) throw new Error(`${this.spec.name}: no tensor '${n}'`);
      out[n] = t;
    }
    return out;
  }

  /** Parameters fed by the caller every step. */
  get externalParameterNames(): string[] {
    return this.compiled.externalParams;
  }

  /** A copy of the current parameters and running statistics (not optimizer state). */
  modelTensors(): Map<string, TensorData> {
    const out = new Map<string, TensorData>();
    for (const [k, v] of this.state) if (!k.includes('::')) out.set(k, tensor('float32', v.dims, Float32Array.from(v.data as Float32Array)));
    return out;
  }

  private evalSession: Promise<ort.InferenceSession> | undefined;

  /** Eval-mode forward pass with the current parameters (batch norm running stats, no dropout). */
  async evaluate(feeds: Record<string, TensorData>): Promise<TensorData> {
    this.evalSession ??= (async () => {
      const { graph } = buildEvalGraph(this.spec, this.modelTensors(), true);
      return (await createSession(writeModel(graph), { providers: this.spec.providers, intraOpThreads: this.spec.threads })).session;
    })();
    const s = await this.evalSession;
    const inputs: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) inputs[k] = toOrt(v);
    for (const [k, v] of this.state) if (!k.includes('::') && s.inputNames.includes(k)) inputs[k] = v;
    return fromOrt((await s.run(inputs))[this.spec.outputName ?? 'output']);
  }

  /** The trained model as ONNX: eval-mode graph with the current parameters baked in. */
  exportGraph(): Graph {
    return buildEvalGraph(this.spec, this.modelTensors(), false).graph;
  }

  /**
   * Checkpoint folder: checkpoint.json (format, step, seed, optimizer, groups, schedule, tensor files)
   * and one .npy per tensor under tensors/ (parameters, optimizer state, running statistics).
   */
  saveCheckpoint(dir: string, extra: Record<string, unknown> = {}): void {
    mkdirSync(join(dir, 'tensors'), { recursive: true });
    const files: Record<string, string> = {};
    let i = 0;
    for (const [k, v] of this.state) {
      const file = `tensors/${String(i++).padStart(4, '0')}.npy`;
      writeNpy(join(dir, file), v.data as Float32Array, v.dims as number[]);
      files[k] = file;
    }
    for (const [k, v] of this.hostState) {
      const file = `tensors/${String(i++).padStart(4, '0')}.npy`;
      writeNpy(join(dir, file), v);
      files[k] = file;
    }
    const meta = {
      format: 'cortexcast-checkpoint',
      formatVersion: 1,
      name: this.spec.name,
      step: this.step,
      seed: this.spec.seed,
      optimizer: this.spec.optimizer ?? { kind: 'adamw' },
      groups: this.compiled.groups.map((gr) => ({ ...gr, match: String(gr.match) })),
      schedule: this.schedule.describe(),
      tensors: files,
      extra,
    };
    writeFileSync(join(dir, 'checkpoint.json'), JSON.stringify(meta, null, 1));
  }

  /** Restore a checkpoint written by saveCheckpoint for the same spec; returns its `extra`. */
  loadCheckpoint(dir: string): Record<string, unknown> {
    const p = join(dir, 'checkpoint.json');
    const meta = readJsonFile(p, CHECKPOINT_JSON, 'CC_ERR_CHECKPOINT', dir);
    if (meta.seed !== this.spec.seed) throw ccError('CC_ERR_CHECKPOINT', dir, `its seed ${meta.seed} differs from this run's seed ${this.spec.seed}`);
    for (const [k, buf] of this.hostState) {
      const f = meta.tensors[k];
      if (!f) throw ccError('CC_ERR_CHECKPOINT', dir, `it lacks tensor '${k}' (a different model?)`);
      buf.set(readNpy(join(dir, f)).data as Float32Array);
    }
    for (const k of [...this.compiled.stateTensors, ...this.compiled.hostParams]) {
      const f = meta.tensors[k];
      if (!f) throw ccError('CC_ERR_CHECKPOINT', dir, `it lacks tensor '${k}' (a different model?)`);
      const a = readNpy(join(dir, f));
      const cur = this.state.get(k)!;
      if (a.shape.join(',') !== cur.dims.join(',')) throw ccError('CC_ERR_CHECKPOINT', dir, `tensor '${k}' is [${a.shape}], the model's is [${cur.dims}]`);
      (this.state.get(k)!.data as Float32Array).set(a.data as Float32Array);
    }
    this.step = meta.step;
    this.evalSession = undefined;
    return meta.extra;
  }
}
