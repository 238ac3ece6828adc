import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { readNpy, writeNpy } from '../common/npy.js';
import type { LayerContext } from '../models/layers.js';
import { newGraph, tensor, writeModel, GraphError, type Graph, type TensorData, type Value } from '../models/onnx/index.js';
import { createSession, fromOrt, toOrt, type ExecutionProvider } from '../models/ort.js';
import { Rng } from '../models/rng.js';
import { buildGradients } from './autodiff/engine.js';
import { groupOf, stateNames, updateNodes, type OptimizerConfig, type ParamGroup } from './optim.js';
import { constantLr, type LrSchedule } from './schedule.js';

/** What a model is, independent of mode: called once for the training graph and once for export. */
export type ModelBuilder = (ctx: LayerContext, batch: number | 'batch') => { inputs: Value[]; output: Value };

/** The training objective on top of the model's output: target inputs, the loss, optional metrics. */
export type Objective = (ctx: LayerContext, output: Value) => { targets: Value[]; loss: Value; metrics?: Record<string, Value> };

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
}

export interface StepResult {
  loss: number;
  metrics: Record<string, number>;
  /** Gradients with respect to the requested inputs. */
  inputGradients: Record<string, Float32Array>;
  ms: number;
}

const NEXT = ':next';

interface CompiledTraining {
  graph: Graph;
  trainable: string[];
  stateTensors: string[];
  groups: ParamGroup[];
  lrInputs: string[];
  initial: Map<string, TensorData>;
  metricNames: string[];
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
  for (const p of params) {
    const gi = groupOf(groups, p);
    if (gi < 0) throw new GraphError(`parameter '${p}' matches no parameter group`);
    if (groups[gi].frozen) continue;
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
  const wantInputs = (spec.inputGradients ?? []).map((n) => inputs.find((v) => v.name === n) ?? g.value(n));
  const wrt = [...trainable, ...wantInputs];
  const grads = wrt.length ? buildGradients(g, obj.loss, wrt) : new Map<string, Value>();
  for (const v of wantInputs) g.output(grads.get(v.name)!, `grad:${v.name}`);
  const step = g.input('step', 'float32', []);
  const lrInputs = groups.map((_, i) => `lr:${i}`);
  const lrs = lrInputs.map((n) => g.input(n, 'float32', []));
  g.scope('optimizer', () => {
    for (const p of trainable) {
      const gi = groupOf(groups, p.name);
      const names = stateNames(opt.kind, p.name);
      const st = names.map((n) => {
        initial.set(n, tensor(p.dtype, p.shape as number[]));
        return g.input(n, p.dtype, p.shape);
      });
      const upd = g.scope(p.name, () => updateNodes(g, opt, p, grads.get(p.name)!, st, lrs[gi], step, groups[gi]));
      g.output(upd.param, p.name + NEXT);
      upd.state.forEach((v, i) => g.output(v, names[i] + NEXT));
    }
  });
  for (const [s, next] of state) {
    if (!next) throw new GraphError(`state '${s}' has no training-mode update`);
    g.output(next, s + NEXT);
  }
  const stateTensors = [...initial.keys()];
  return { graph: g, trainable: trainable.map((v) => v.name), stateTensors, groups, lrInputs, initial, metricNames };
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
  g.output(output, 'output');
  return { graph: g, inputs, output };
}

/**
 * Holds parameters, optimizer state and running statistics between steps as ONNX Runtime tensors:
 * each step's outputs are fed straight back as the next step's inputs (no per-element copies in
 * JavaScript; onnxruntime-node offers no IO binding on CPU, so ORT's own output copy remains).
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
  ) {}

  static async create(spec: TrainingSpec): Promise<TrainingSession> {
    const compiled = compileTraining(spec);
    const { session, provider } = await createSession(writeModel(compiled.graph), { providers: spec.providers, intraOpThreads: spec.threads });
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

  /** One optimisation step on a batch. Feeds: model inputs and objective targets by name. */
  async trainStep(feeds: Record<string, TensorData>): Promise<StepResult> {
    const t0 = performance.now();
    const inputs: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(feeds)) inputs[k] = toOrt(v);
    for (const [k, v] of this.state) inputs[k] = v;
    this.step += 1;
    inputs.step = new ort.Tensor('float32', Float32Array.of(this.step), []);
    inputs.dropout_seed = new ort.Tensor('float64', Float64Array.of(((this.spec.seed * 7919 + this.step) % 1_000_003) + 0.5), []);
    const lrs = this.currentLrs();
    this.compiled.lrInputs.forEach((n, i) => (inputs[n] = new ort.Tensor('float32', Float32Array.of(lrs[i]), [])));
    const out = await this.session.run(inputs);
    for (const k of this.compiled.stateTensors) this.state.set(k, out[k + NEXT]);
    const metrics: Record<string, number> = {};
    for (const m of this.compiled.metricNames) metrics[m] = Number(out[`metric:${m}`].data[0]);
    const inputGradients: Record<string, Float32Array> = {};
    for (const n of this.spec.inputGradients ?? []) inputGradients[n] = out[`grad:${n}`].data as Float32Array;
    this.lastStepMs = performance.now() - t0;
    return { loss: Number(out.loss.data[0]), metrics, inputGradients, ms: this.lastStepMs };
  }

  /** Current values of parameters and running statistics (not optimizer state). */
  modelTensors(): Map<string, TensorData> {
    const out = new Map<string, TensorData>();
    for (const [k, v] of this.state) if (!k.includes('::')) out.set(k, fromOrt(v));
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
    return fromOrt((await s.run(inputs)).output);
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
    if (!existsSync(p)) throw new Error(`no checkpoint.json in ${dir}`);
    const meta = JSON.parse(readFileSync(p, 'utf8')) as { format: string; step: number; seed: number; tensors: Record<string, string>; extra: Record<string, unknown> };
    if (meta.format !== 'cortexcast-checkpoint') throw new Error(`${p} is not a cortexcast checkpoint`);
    if (meta.seed !== this.spec.seed) throw new Error(`checkpoint seed ${meta.seed} differs from this run's seed ${this.spec.seed}`);
    for (const k of this.compiled.stateTensors) {
      const f = meta.tensors[k];
      if (!f) throw new Error(`checkpoint ${dir} lacks tensor '${k}' (a different model?)`);
      const a = readNpy(join(dir, f));
      const cur = this.state.get(k)!;
      if (a.shape.join(',') !== cur.dims.join(',')) throw new Error(`checkpoint tensor '${k}' is [${a.shape}], model has [${cur.dims}]`);
      this.state.set(k, new ort.Tensor('float32', a.data as Float32Array, a.shape));
    }
    this.step = meta.step;
    this.evalSession = undefined;
    return meta.extra;
  }
}
