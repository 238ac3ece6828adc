import { join } from 'node:path';
import type ort from 'onnxruntime-node';
import { ccError } from '../../common/errors.js';
import { columnCorrelation, columnMeanStd, mean } from '../../common/stats.js';
import { writeNpy } from '../../common/npy.js';
import {
  ENCODER_INPUT,
  ENCODER_OUTPUT,
  ENCODER_PROFILES,
  encoderNet,
  FIRST_CONV_WEIGHT,
  multiSessionEncoder,
  readoutL1Params,
  readoutName,
  type EncoderConfig,
} from '../../models/architectures/encoder.js';
import { loadBundle, updateBundleMetrics, type Manifest } from '../../models/bundle.js';
import { dataSides, writeTrainedBundle } from '../run/export.js';
import { runTraining, type Recipe, type RunRecord } from '../run/loop.js';
import { reduce, scalar, type LayerContext } from '../../models/layers.js';
import { tensor, type TensorData, type Value } from '../../models/onnx/index.js';
import { createSession, runOnce } from '../../models/ort.js';
import { DEFAULT_PREPROCESS, prepareDataset, readRawSplit, type PreparedData } from '../../datasets/preprocess.js';
import { SensoriumDataset, sessionNames } from '../../datasets/sensorium.js';
import { openDataset } from '../../datasets/dataset-source.js';
import { SimulatedTruth } from '../data/simulated-truth.js';
import { histogramsSvg, writeFile } from '../report/figures.js';
import { energyStaPositions } from './readout-init.js';
import { ReduceOnPlateau } from '../engine/schedule.js';
import { buildEvalGraph, TrainingSession, type TrainingSpec } from '../engine/trainer.js';
import { poissonNll } from '../engine/losses.js';

/** Written beside an encoder bundle: per-neuron validation correlation, float32 [neurons]. */
export const NEURON_CORRELATION_FILE = 'neuron_correlation.npy';

export interface TrainEncoderOptions {
  /** One dataset folder per recording session (shared core, one readout each). */
  data: string[];
  out: string;
  profile?: keyof typeof ENCODER_PROFILES;
  config?: Partial<EncoderConfig>;
  epochs?: number;
  batch?: number;
  lr?: number;
  /** The report's regularisers: L1 on readout weights, Laplace smoothness of the first conv. */
  l1?: number;
  laplace?: number;
  /**
   * Gaussian readout start: 'sta' (default) from each neuron's energy spike-triggered average;
   * 'uniform' is the report's U(+-0.3) around the centre.
   */
  positionInit?: 'sta' | 'uniform';
  /** Early stopping: epochs without a better validation correlation. */
  patience?: number;
  seed?: number;
  maxTrain?: number;
  threads?: number;
  /** Run folder (default <out>/run): metrics, curves, checkpoint, stop.json. */
  run?: string;
  maxSteps?: number;
  /** Wall-clock budget of this invocation, seconds (the best validated epoch is kept). */
  budgetSeconds?: number;
  resume?: boolean;
  quiet?: boolean;
  log?: (s: string) => void;
}

export interface EncoderScores {
  /** Mean per-neuron correlation of prediction and response. */
  validationCorrelation: number;
  testCorrelationSingleTrial: number;
  testCorrelationAveraged: number;
  /** Mean fraction of explainable variance explained, over neurons with explainable variance > 15%. */
  fractionExplainableVariance?: number;
  fevNeurons?: number;
  /** Simulated data: correlation with the noise-free response (test images, repeats averaged). */
  testCorrelationNoiseFree?: number;
}

export interface EncoderSessionResult {
  dir: string;
  manifest: Manifest;
  scores: EncoderScores;
}

/** Per-neuron predictions for images [count, H*W] with an exported encoder session. */
export async function predictResponses(session: ort.InferenceSession, images: Float32Array, count: number, h: number, w: number, batch = 64): Promise<Float32Array> {
  let out: Float32Array | undefined;
  for (let r0 = 0; r0 < count; r0 += batch) {
    const nb = Math.min(batch, count - r0);
    const res = await runOnce(session, { [ENCODER_INPUT]: tensor('float32', [nb, 1, h, w], images.subarray(r0 * h * w, (r0 + nb) * h * w)) });
    const y = res[ENCODER_OUTPUT].data as Float32Array;
    const n = y.length / nb;
    out ??= new Float32Array(count * n);
    out.set(y, r0 * n);
  }
  return out!;
}

/** Laplace smoothness of a conv weight [C, Cin, k, k]: ||laplace(w)||^2 / ||w||^2. */
function laplacePenalty(ctx: LayerContext, w: Value): Value {
  const { g } = ctx;
  const [c, cin, k] = w.shape as number[];
  const kernel = g.initializer('laplace', tensor('float32', [1, 1, 3, 3], [0, -1, 0, -1, 4, -1, 0, -1, 0]));
  const flat = g.op('Reshape', [w, g.initializer('shape', tensor('int64', [4], [c * cin, 1, k, k]))]);
  const lap = g.op('Conv', [flat, kernel], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] });
  const all = (v: Value): number[] => v.shape.map((_, i) => i);
  return g.op('Div', [reduce(ctx, 'ReduceSumSquare', lap, all(lap), false), reduce(ctx, 'ReduceSumSquare', w, all(w), false)]);
}

/** Fraction of explainable variance explained per neuron, from single trials grouped by image. */
function fractionExplainable(obs: Float32Array, pred: Float32Array, groups: number[][], n: number): { fev: number; neurons: number } {
  const rows = groups.reduce((a, g) => a + g.length, 0);
  const { std } = columnMeanStd(obs, rows, n);
  const noise = new Float64Array(n);
  let dof = 0;
  for (const grp of groups) {
    if (grp.length < 2) continue;
    dof += grp.length - 1;
    for (let k = 0; k < n; k++) {
      let m = 0;
      for (const r of grp) m += obs[r * n + k] / grp.length;
      for (const r of grp) noise[k] += (obs[r * n + k] - m) ** 2;
    }
  }
  if (!dof) return { fev: NaN, neurons: 0 };
  let sum = 0;
  let count = 0;
  for (let k = 0; k < n; k++) {
    const total = (std[k] ** 2 * rows) / Math.max(1, rows - 1);
    const nv = noise[k] / dof;
    if (total <= 0 || (total - nv) / total < 0.15) continue;
    let mse = 0;
    for (let r = 0; r < rows; r++) mse += (obs[r * n + k] - pred[r * n + k]) ** 2 / rows;
    sum += 1 - (mse - nv) / (total - nv);
    count++;
  }
  return { fev: count ? sum / count : NaN, neurons: count };
}

/**
 * Train an encoder on one or more sessions (the report's encoder): Poisson loss summed over neurons
 * and images, L1 on readout weights, Laplace smoothness on the first conv, Adam, reduce-on-plateau on
 * validation correlation and early stopping; the best epoch's parameters are exported, one encoder
 * bundle per session (kind `encoder`), and scored on the test tier.
 */
export async function trainEncoder(o: TrainEncoderOptions): Promise<{ sessions: EncoderSessionResult[]; seconds: number; epochs: number; history: RunRecord[] }> {
  const t0 = Date.now();
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  if (!o.data.length) throw ccError('CC_ERR_OPTION', 'train encoder needs at least one --data folder');
  const cfg: EncoderConfig = { ...ENCODER_PROFILES[o.profile ?? 'small'], ...o.config };
  const dsets = o.data.map((d) => openDataset(d));
  const prepared: PreparedData[] = dsets.map((ds) => prepareDataset(ds, { ...DEFAULT_PREPROCESS, imageSize: [cfg.height, cfg.width] }, { quiet: o.quiet, maxTrain: o.maxTrain }));
  const names = sessionNames(o.data);
  const bundles = prepared.map((_, k) => (prepared.length > 1 ? join(o.out, names[k]) : o.out));
  const { recipe, best } = await encoderRecipe(o, cfg, dsets, prepared, bundles, t0, log);
  const seed = o.seed ?? 1;
  const { history } = await runTraining(recipe, {
    run: o.run ?? join(o.out, 'run'),
    epochs: o.epochs ?? 30,
    maxSteps: o.maxSteps,
    budgetSeconds: o.budgetSeconds,
    patience: o.patience ?? 5,
    resume: o.resume,
    shuffleSeed: (startEpoch) => seed * 31 + 7 + (startEpoch - 1),
    startedAt: t0,
    quiet: o.quiet,
    log,
  });
  const results: EncoderSessionResult[] = [];
  for (let k = 0; k < prepared.length; k++) {
    const { session } = await createSession(loadBundle(bundles[k]).model, { intraOpThreads: o.threads });
    const scores = await scoreEncoder(session, dsets[k], prepared[k], cfg);
    updateBundleMetrics(bundles[k], { test: numericScores(scores) });
    const manifest = loadBundle(bundles[k]).manifest;
    writeFile(join(bundles[k], 'correlations.svg'), histogramsSvg(`encoder ${manifest.name}: per-neuron test correlation`, [{ label: 'single trial', values: scores.perNeuronSingle }, { label: 'noise-free (simulated)', values: scores.perNeuronNoiseFree ?? [] }].filter((x) => x.values.length)));
    log(`encoder ${bundles[k]}: test correlation single trial ${scores.testCorrelationSingleTrial.toFixed(3)}, averaged ${scores.testCorrelationAveraged.toFixed(3)}${scores.testCorrelationNoiseFree !== undefined ? `, noise-free ${scores.testCorrelationNoiseFree.toFixed(3)}` : ''}${scores.fractionExplainableVariance !== undefined ? `, FEV ${scores.fractionExplainableVariance.toFixed(3)} (${scores.fevNeurons} neurons)` : ''}`);
    results.push({ dir: bundles[k], manifest, scores: { ...(numericScores(scores) as unknown as EncoderScores), validationCorrelation: best.correlation } });
  }
  return { sessions: results, seconds: (Date.now() - t0) / 1000, epochs: history.length, history };
}

/** The encoder as a recipe: Poisson step with sampled readout noise; validation correlation per neuron; plateau schedule. */
// Over 80 lines: one closure holds the recipe's state (session, schedule, buffers); its methods are short.
async function encoderRecipe(o: TrainEncoderOptions, cfg: EncoderConfig, dsets: SensoriumDataset[], prepared: PreparedData[], bundles: string[], t0: number, log: (s: string) => void) {
  const batch = o.batch ?? 32;
  const seed = o.seed ?? 1;
  const lr = o.lr ?? 5e-3;
  const l1 = o.l1 ?? 0.0076;
  const laplace = o.laplace ?? 6.38;
  const positionInit = o.positionInit ?? 'sta';
  const sessions: { neurons: number; meanResponse: Float32Array; initialPositions?: Float32Array }[] = [];
  for (const p of prepared) {
    const staRows = Math.min(p.train.count, 2000);
    const initialPositions =
      cfg.readout === 'gaussian' && positionInit === 'sta'
        ? await energyStaPositions(p.train.images, p.train.responses, staRows, p.neurons, cfg.height, cfg.width, (cfg.firstKernel - 1) / 2)
        : undefined;
    sessions.push({ neurons: p.neurons, meanResponse: Float32Array.from(columnMeanStd(p.train.responses, p.train.count, p.neurons).mean), initialPositions });
  }
  const S = sessions.length;
  const P = cfg.height * cfg.width;
  const spec: TrainingSpec = {
    name: 'encoder',
    outputName: ENCODER_OUTPUT,
    batch,
    seed,
    threads: o.threads,
    model: (ctx, b) => {
      const m = multiSessionEncoder(ctx, b as number, sessions, cfg);
      const stepInputs = Object.fromEntries(m.noises.flatMap((v, k) => (v ? [[`noise_${k}`, v] as const] : [])));
      return { inputs: [m.input], output: m.outputs[0], outputs: m.outputs, stepInputs };
    },
    objective: (ctx, _output, model) => encoderObjective(ctx, model.outputs!, sessions, batch, { l1, laplace }),
    groups: [{ match: '', lr }],
    optimizer: { kind: 'adamw' },
  };
  const ts = await TrainingSession.create(spec);
  const schedule = new ReduceOnPlateau({ mode: 'max', decay: 0.3, patience: 2, minFactor: 1e-3 });
  ts.schedule = schedule;
  log(`encoder: ${cfg.readout} readout, core ${cfg.hidden} ch x ${cfg.layers + 1} layers${cfg.separable ? ' (depth-separable)' : ''}, ${S} session(s), ${ts.parameterCount.toLocaleString()} parameters, batch ${batch}`);
  const image = new Float32Array(S * batch * P);
  const targets = prepared.map((p) => new Float32Array(batch * p.neurons));
  const noises = prepared.map((p) => new Float32Array(batch * p.neurons * 2));
  const config = { model: 'encoder', encoder: cfg, positionInit, sessions: o.data, batch, lr, l1, laplace, seed };
  const best = { correlation: NaN, perNeuron: [] as Float32Array[] };
  let lastPerNeuron: Float32Array[] = [];
  const recipe: Recipe = {
    name: 'encoder',
    trainCounts: prepared.map((p) => p.train.count),
    batch,
    config,
    selection: { metric: 'correlation', mode: 'max' },
    curves: [{ key: 'correlation', label: 'correlation' }],
    get steps() {
      return ts.step;
    },
    step: async (rows, rng) => {
      prepared.forEach((p, k) => {
        const n = p.neurons;
        rows[k].forEach((row, b) => {
          image.set(p.train.images.subarray(row * P, (row + 1) * P), (k * batch + b) * P);
          targets[k].set(p.train.responses.subarray(row * n, (row + 1) * n), b * n);
        });
        const nz = noises[k];
        for (let i = 0; i < nz.length; i++) nz[i] = rng.normal();
      });
      const feeds: Record<string, TensorData> = { [ENCODER_INPUT]: tensor('float32', [S * batch, 1, cfg.height, cfg.width], image) };
      prepared.forEach((p, k) => {
        feeds[`target_${k}`] = tensor('float32', [batch, p.neurons], targets[k]);
        const noise = ts.stepInputNames[`noise_${k}`];
        if (noise) feeds[noise] = tensor('float32', [batch, p.neurons, 2], noises[k]);
      });
      const r = await ts.trainStep(feeds);
      return { loss: r.loss, shown: r.metrics.poisson, ms: r.ms };
    },
    validate: async () => {
      const tensors = ts.modelTensors();
      lastPerNeuron = [];
      for (let k = 0; k < S; k++) {
        const session = await exportSession(spec, cfg, tensors, k, S, prepared[k].neurons);
        const pred = await predictResponses(session, prepared[k].validation.images, prepared[k].validation.count, cfg.height, cfg.width);
        lastPerNeuron.push(columnCorrelation(pred, prepared[k].validation.responses, prepared[k].validation.count, prepared[k].neurons));
      }
      return { scores: { correlation: mean(lastPerNeuron.map(mean)), lrFactor: schedule.factor() } };
    },
    afterValidation: (rec) => schedule.report(rec.correlation),
    exportBest: async (rec) => {
      best.correlation = rec.correlation;
      best.perNeuron = lastPerNeuron;
      const tensors = ts.modelTensors();
      for (let k = 0; k < S; k++) {
        const p = prepared[k];
        const graph = buildEvalGraph(sessionSpec(spec, cfg, k, S, p.neurons), tensors, false).graph;
        writeTrainedBundle(bundles[k], {
          name: `encoder-${p.neurons}n`,
          kind: 'encoder',
          graph,
          docString: 'cortexcast encoder: z-scored image -> std-scaled responses',
          inputName: ENCODER_INPUT,
          outputName: ENCODER_OUTPUT,
          ...dataSides(p),
          training: { dataset: dsets[k].dir, config: { ...config, bestEpoch: rec.epoch, bestStep: rec.step }, seconds: (Date.now() - t0) / 1000 },
          metrics: { validation: { correlation: rec.correlation } },
        });
        // Per-neuron validation correlation: `meis --neurons top:N` and readins pick neurons by it.
        writeNpy(join(bundles[k], NEURON_CORRELATION_FILE), lastPerNeuron[k]);
      }
    },
    saveCheckpoint: (dir) => ts.saveCheckpoint(join(dir, 'encoder'), { schedule: schedule.state() }),
    loadCheckpoint: (dir) => {
      const extra = ts.loadCheckpoint(join(dir, 'encoder')) as { schedule?: ReturnType<ReduceOnPlateau['state']> };
      if (extra.schedule) schedule.restore(extra.schedule);
    },
  };
  return { recipe, best };
}

function encoderObjective(ctx: LayerContext, outputs: Value[], sessions: { neurons: number }[], batch: number, w: { l1: number; laplace: number }): ReturnType<TrainingSpec['objective']> {
  const { g } = ctx;
  const targets: Value[] = [];
  let poissonSum: Value | undefined;
  let poissonMean: Value | undefined;
  outputs.forEach((pred, k) => {
    const t = g.input(`target_${k}`, 'float32', [batch, sessions[k].neurons]);
    targets.push(t);
    const nll = poissonNll(ctx, pred, t);
    const s = reduce(ctx, 'ReduceSum', nll, [0, 1], false);
    const m = reduce(ctx, 'ReduceMean', nll, [0, 1], false);
    poissonSum = poissonSum ? g.op('Add', [poissonSum, s]) : s;
    poissonMean = poissonMean ? g.op('Add', [poissonMean, m]) : m;
  });
  let loss = poissonSum!;
  for (const p of readoutL1Params(ctx.params ?? [])) {
    const v = g.value(p);
    loss = g.op('Add', [loss, g.op('Mul', [reduce(ctx, 'ReduceSum', g.op('Abs', [v]), v.shape.map((_, i) => i), false), scalar(g, 'l1', w.l1)])]);
  }
  if (w.laplace > 0) loss = g.op('Add', [loss, g.op('Mul', [laplacePenalty(ctx, g.value(FIRST_CONV_WEIGHT)), scalar(g, 'gamma_laplace', w.laplace)])]);
  return { targets, loss, metrics: { poisson: g.op('Div', [poissonMean!, scalar(g, 'sessions', outputs.length)]) } };
}

/** A spec whose model is session k alone (shared core + its readout), for evaluation and export. */
function sessionSpec(spec: TrainingSpec, cfg: EncoderConfig, k: number, sessions: number, neurons: number): TrainingSpec {
  return { ...spec, model: (ctx, b) => {
    const m = encoderNet(ctx, b, neurons, cfg, { name: readoutName(k, sessions) });
    return { inputs: [m.input], output: m.output };
  } };
}

async function exportSession(spec: TrainingSpec, cfg: EncoderConfig, tensors: Map<string, TensorData>, k: number, sessions: number, neurons: number): Promise<ort.InferenceSession> {
  const g = buildEvalGraph(sessionSpec(spec, cfg, k, sessions, neurons), tensors, false).graph;
  return (await createSession(g, { intraOpThreads: spec.threads })).session;
}

async function scoreEncoder(session: ort.InferenceSession, ds: SensoriumDataset, p: PreparedData, cfg: EncoderConfig): Promise<EncoderScores & { perNeuronSingle: Float32Array; perNeuronNoiseFree?: Float32Array }> {
  const n = p.neurons;
  const single = readRawSplit(ds, 'test', { average: false, imageSize: [cfg.height, cfg.width] });
  for (let i = 0; i < single.responses.length; i++) single.responses[i] *= p.prep.responseScale[i % n];
  const rows = single.imageIds.length;
  // Repeats show the same image: each single trial's prediction is its image's (repeat-averaged) row.
  const predAvg = await predictResponses(session, p.test.images, p.test.count, cfg.height, cfg.width);
  const groupOf = new Map(p.test.trials.flatMap((trials, g) => trials.map((t) => [t, g] as const)));
  const predSingle = new Float32Array(rows * n);
  single.trials.forEach(([t], r) => predSingle.set(predAvg.subarray(groupOf.get(t)! * n, (groupOf.get(t)! + 1) * n), r * n));
  const perNeuronSingle = columnCorrelation(predSingle, single.responses, rows, n);
  const scores: EncoderScores & { perNeuronSingle: Float32Array; perNeuronNoiseFree?: Float32Array } = {
    validationCorrelation: NaN,
    testCorrelationSingleTrial: mean(perNeuronSingle),
    testCorrelationAveraged: mean(columnCorrelation(predAvg, p.test.responses, p.test.count, n)),
    perNeuronSingle,
  };
  // Repeats of each image, as row indices of the single-trial split.
  const rowOf = new Map(single.trials.map((t, r) => [t[0], r]));
  const groups = p.test.trials.map((g) => g.map((t) => rowOf.get(t)!));
  const fev = fractionExplainable(single.responses, predSingle, groups, n);
  if (fev.neurons) Object.assign(scores, { fractionExplainableVariance: fev.fev, fevNeurons: fev.neurons });
  const truth = await SimulatedTruth.load(ds);
  if (truth) {
    const expected = await truth.expected(ds, p.test.trials);
    scores.perNeuronNoiseFree = columnCorrelation(predAvg, expected, p.test.count, n);
    scores.testCorrelationNoiseFree = mean(scores.perNeuronNoiseFree);
  }
  return scores;
}

const numericScores = (s: object): Record<string, number> =>
  Object.fromEntries(Object.entries(s).filter(([, v]) => typeof v === 'number' && Number.isFinite(v))) as Record<string, number>;
