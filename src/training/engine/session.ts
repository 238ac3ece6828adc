import ort from 'onnxruntime-node';
import { ccError } from '../../common/errors.js';
import { tensor, writeModel, type Graph, type TensorData } from '../../models/onnx/index.js';
import { createSession, fromOrt, toOrt, type ExecutionProvider } from '../../models/ort.js';
import { readCheckpoint, writeCheckpoint } from './checkpoint.js';
import { buildEvalGraph, compileTraining, hostGradChunks, type CompiledTraining, type TrainingSpec } from './compile.js';
import { hostUpdate } from './host-optimizer.js';
import { DROPOUT_SEED_INPUT, extraOutputName, gradChunkName, gradName, isOptimizerState, LOSS, metricName, nextName, optimizerStateNames, STEP_INPUT } from './names.js';
import { groupOf, resolveOptimizer } from './optim.js';
import { constantLr, type LrSchedule } from './schedule.js';

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
    const kind = resolveOptimizer(spec.optimizer).kind;
    for (const p of compiled.hostParams) {
      const v = state.get(p)!;
      this.hostGrad.set(p, hostGradChunks(v.size, spec.hostGradChunkElements).map(([, len]) => new ort.Tensor('float32', new Float32Array(len), [len])));
      for (const n of optimizerStateNames(kind, p)) this.hostState.set(n, new Float32Array(v.size));
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
    inputs[STEP_INPUT] = new ort.Tensor('float32', Float32Array.of(this.step), []);
    inputs[DROPOUT_SEED_INPUT] = new ort.Tensor('float64', Float64Array.of(((this.spec.seed * 7919 + this.step) % 1_000_003) + 0.5), []);
    const lrs = this.currentLrs();
    this.compiled.lrInputs.forEach((n, i) => (inputs[n] = new ort.Tensor('float32', Float32Array.of(lrs[i]), [])));
    const fetches: Record<string, ort.Tensor | null> = { [LOSS]: null };
    for (const m of this.compiled.metricNames) fetches[metricName(m)] = null;
    for (const m of this.compiled.outputNames) fetches[extraOutputName(m)] = null;
    for (const n of this.spec.inputGradients ?? []) fetches[gradName(n)] = null;
    for (const k of this.compiled.stateTensors) fetches[nextName(k)] = this.spare.get(k)!;
    for (const [p, chunks] of this.hostGrad) chunks.forEach((t, k) => (fetches[gradChunkName(p, k)] = t));
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
    for (const m of this.compiled.metricNames) metrics[m] = Number(out[metricName(m)].data[0]);
    const inputGradients: Record<string, Float32Array> = {};
    for (const n of this.spec.inputGradients ?? []) inputGradients[n] = out[gradName(n)].data as Float32Array;
    const outputs: Record<string, ort.Tensor> = {};
    for (const m of this.compiled.outputNames) outputs[m] = out[extraOutputName(m)];
    this.lastStepMs = performance.now() - t0;
    return { loss: Number(out[LOSS].data[0]), metrics, inputGradients, outputs, ms: this.lastStepMs, hostMs };
  }

  /** The graph's optimizer update, fused into one in-place pass (see TrainingSpec.hostUpdateMinElements). */
  private hostUpdate(p: string, lrs: number[]): void {
    const opt = resolveOptimizer(this.spec.optimizer);
    const gi = groupOf(this.compiled.groups, p);
    const [s0, s1] = optimizerStateNames(opt.kind, p).map((n) => this.hostState.get(n)!);
    hostUpdate({ weights: this.state.get(p)!.data as Float32Array, gradChunks: this.hostGrad.get(p)!.map((t) => t.data as Float32Array), state: [s0, s1], lr: lrs[gi], group: this.compiled.groups[gi], optimizer: opt, step: this.step });
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
  /** Graph input of each training-only step input the model builder declared (BuiltModel.stepInputs), by role. */
  get stepInputNames(): Readonly<Record<string, string>> {
    return this.compiled.stepInputs;
  }

  get externalParameterNames(): string[] {
    return this.compiled.externalParams;
  }

  /** A copy of the current parameters and running statistics (not optimizer state). */
  modelTensors(): Map<string, TensorData> {
    const out = new Map<string, TensorData>();
    for (const [k, v] of this.state) if (!isOptimizerState(k)) out.set(k, tensor('float32', v.dims, Float32Array.from(v.data as Float32Array)));
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
    for (const [k, v] of this.state) if (!isOptimizerState(k) && s.inputNames.includes(k)) inputs[k] = v;
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
    const tensors = new Map<string, { data: Float32Array; dims: readonly number[] }>();
    for (const [k, v] of this.state) tensors.set(k, { data: v.data as Float32Array, dims: v.dims });
    for (const [k, v] of this.hostState) tensors.set(k, { data: v, dims: [v.length] });
    writeCheckpoint(dir, tensors, {
      name: this.spec.name,
      step: this.step,
      seed: this.spec.seed,
      optimizer: this.spec.optimizer ?? { kind: 'adamw' },
      groups: this.compiled.groups.map((gr) => ({ ...gr, match: String(gr.match) })),
      schedule: this.schedule.describe(),
      extra,
    });
  }

  /** Restore a checkpoint written by saveCheckpoint for the same spec; returns its `extra`. */
  loadCheckpoint(dir: string): Record<string, unknown> {
    const ck = readCheckpoint(dir, this.spec.seed);
    for (const [k, buf] of this.hostState) buf.set(ck.tensor(k).data as Float32Array);
    for (const k of [...this.compiled.stateTensors, ...this.compiled.hostParams]) {
      const a = ck.tensor(k);
      const cur = this.state.get(k)!;
      if (a.shape.join(',') !== cur.dims.join(',')) throw ccError('CC_ERR_CHECKPOINT', dir, `tensor '${k}' is [${a.shape}], the model's is [${cur.dims}]`);
      (cur.data as Float32Array).set(a.data as Float32Array);
    }
    this.step = ck.step;
    this.evalSession = undefined;
    return ck.extra;
  }
}
