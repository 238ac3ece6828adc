import { int64s, type LayerContext } from '../../models/layers.js';
import { newGraph, tensor, GraphError, type Graph, type TensorData, type Value } from '../../models/onnx/index.js';
import type { ExecutionProvider } from '../../models/ort.js';
import { Rng } from '../../models/rng.js';
import { buildGradients } from './autodiff/engine.js';
import { DROPOUT_SEED_INPUT, extraOutputName, gradChunkName, gradName, LOSS, lrInputName, metricName, nextName, optimizerStateNames, STEP_INPUT } from './names.js';
import { groupOf, resolveOptimizer, updateNodes, type OptimizerConfig, type ParamGroup } from './optim.js';

/** Everything a model builder made that its objective and its training loop need. */
export interface BuiltModel {
  inputs: Value[];
  /** What the exported graph outputs. */
  output: Value;
  /** Every output the objective scores when there are several (one per session); default [output]. */
  outputs?: Value[];
  /** Training-only inputs fed each step besides data and targets (e.g. a readout's sampling noise), by role. */
  stepInputs?: Record<string, Value>;
}

/** What a model is, independent of mode: called once for the training graph and once for export. */
export type ModelBuilder = (ctx: LayerContext, batch: number | 'batch') => BuiltModel;

/** The training objective on top of the model's output (and the rest of what the builder made): targets, loss, metrics. */
export type Objective = (
  ctx: LayerContext,
  output: Value,
  model: BuiltModel,
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

/**
 * Host-updated parameters' gradients leave the graph in 1-D chunks of at most this many elements
 * (16 MB). onnxruntime-node copies every output into a fresh ArrayBuffer; glibc serves blocks this size
 * from its heap and reuses them next step, where one 1.3 GB output was a fresh mapping each step whose
 * page faults cost ~4 s a step on a 2-core x86 CPU (paper CNN step 15.3 -> ~10 s).
 */
export const HOST_GRAD_CHUNK = 4 * 2 ** 20;

/** [offset, length] of each gradient chunk of an n-element host-updated parameter. */
export function hostGradChunks(n: number, chunk = HOST_GRAD_CHUNK): [number, number][] {
  const out: [number, number][] = [];
  for (let off = 0; off < n; off += chunk) out.push([off, Math.min(chunk, n - off)]);
  return out;
}

export interface CompiledTraining {
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
  /** The builder's step inputs: role -> graph input name. */
  stepInputs: Record<string, string>;
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
  const dropoutSeed = g.input(DROPOUT_SEED_INPUT, 'float64', []);
  const ctx: LayerContext = { g, rng: new Rng(spec.seed), mode: 'train', dropoutSeed, params, state };
  const model = spec.model(ctx, spec.batch);
  const { inputs } = model;
  const obj = spec.objective(ctx, model.output, model);
  const stepInputs = Object.fromEntries(Object.entries(model.stepInputs ?? {}).map(([role, v]) => [role, v.name]));
  const groups = spec.groups ?? [{ match: '', lr: 1e-3 }];
  const opt = resolveOptimizer(spec.optimizer);
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
  g.output(obj.loss, LOSS);
  const metricNames = Object.keys(obj.metrics ?? {});
  for (const [k, v] of Object.entries(obj.metrics ?? {})) g.output(v, metricName(k));
  const outputNames = Object.keys(obj.outputs ?? {});
  for (const [k, v] of Object.entries(obj.outputs ?? {})) g.output(v, extraOutputName(k));
  const wantInputs = (spec.inputGradients ?? []).map((n) => inputs.find((v) => v.name === n) ?? g.value(n));
  const wrt = [...trainable, ...wantInputs];
  const grads = wrt.length ? buildGradients(g, obj.loss, wrt) : new Map<string, Value>();
  for (const v of wantInputs) g.output(grads.get(v.name)!, gradName(v.name));
  const step = g.input(STEP_INPUT, 'float32', []);
  const lrInputs = groups.map((_, i) => lrInputName(i));
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
          g.outputAs(g.op('Slice', [flat, int64s(g, 'starts', [off]), int64s(g, 'ends', [off + len])]), gradChunkName(p.name, k)),
        );
        continue;
      }
      const gi = groupOf(groups, p.name);
      const names = optimizerStateNames(opt.kind, p.name);
      const st = names.map((n) => {
        initial.set(n, tensor(p.dtype, p.shape as number[]));
        return g.input(n, p.dtype, p.shape);
      });
      const outNames = { param: nextName(p.name), state: names.map(nextName) };
      const upd = g.scope(p.name, () => updateNodes(g, opt, p, grads.get(p.name)!, st, lrs[gi], step, groups[gi], outNames));
      g.output(upd.param);
      upd.state.forEach((v) => g.output(v));
    }
  });
  for (const [s, next] of state) {
    if (!next) throw new GraphError(`state '${s}' has no training-mode update`);
    g.output(next, nextName(s));
  }
  const stateTensors = [...initial.keys()].filter((k) => !hostParams.includes(k));
  return { graph: g, trainable: trainable.map((v) => v.name), stateTensors, hostParams, groups, lrInputs, initial, metricNames, outputNames, externalParams, stepInputs };
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

