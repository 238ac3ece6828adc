import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ccError } from '../../common/errors.js';
import {
  CONV_READIN_PROFILES,
  convReadin,
  featureDecoder,
  greyToZ,
  MLP_READIN_PROFILES,
  mlpReadin,
  vaeDecoder,
  type FeatureDecoderConfig,
  type VaeConfig,
} from '../../models/architectures/autoencoder.js';
import { encoderCore, factorizedReadout, gaussianReadout, positiveRate, type EncoderConfig } from '../../models/architectures/encoder.js';
import { DECODER_INPUT, DECODER_OUTPUT } from '../../models/architectures/ridge.js';
import { loadBundle, type Manifest } from '../../models/bundle.js';
import { reduce, resizeImage, scalar, sigmoid, type LayerContext } from '../../models/layers.js';
import { readModel, tensor, type TensorData, type Value } from '../../models/onnx/index.js';
import { createSession, runOnce } from '../../models/ort.js';
import { Rng } from '../../models/rng.js';
import { DecoderBatch, decoderRecipe, openSessions, testBundles, type DecoderSession } from '../decoders/sessions.js';
import type { DecoderSettings } from '../decoders/settings.js';
import { mseLoss } from '../engine/losses.js';
import { buildEvalGraph, TrainingSession, type TrainingSpec } from '../engine/trainer.js';
import { batchOneLatency } from '../eval/compare.js';
import { FidComputer } from '../eval/metrics/fid.js';
import { runTraining, type RunRecord } from '../run/loop.js';
import { loadTensorsInto, readAutoencoder, type LoadedAutoencoder } from './autoencoder-folder.js';
import { tierToGrey } from './images.js';

export interface TrainLatentOptions {
  /** Autoencoder folder (cortexcast train autoencoder). */
  autoencoder: string;
  data: string;
  /** Bundle folder; with `finetune` the frozen-decoder bundle goes to <out>/frozen. */
  out: string;
  profile?: 'small' | 'paper';
  batch?: number;
  lr?: number;
  weightDecay?: number;
  epochs?: number;
  validateEvery?: number;
  patience?: number;
  maxSteps?: number;
  /** Wall-clock seconds for the whole invocation (with `finetune`, the readin gets 60% of it). */
  budgetSeconds?: number;
  resume?: boolean;
  maxTrain?: number;
  seed?: number;
  threads?: number;
  /** Beyond the report: train readin and decoder end to end on the images after chaining (MSE on z-scored pixels). */
  finetune?: boolean;
  finetuneLr?: number;
  /** Encoder bundle for a cycle-consistency term during fine-tuning: encoder(decoded) close to the recorded responses. */
  cycleEncoder?: string;
  cycleWeight?: number;
  quiet?: boolean;
  log?: (s: string) => void;
}

export interface TrainLatentResult {
  /** The served bundle: fine-tuned when asked, else the frozen-decoder one. */
  manifest: Manifest;
  frozen: { bundle: string; manifest: Manifest; best: RunRecord; history: RunRecord[] };
  finetuned?: { bundle: string; manifest: Manifest; best: RunRecord; history: RunRecord[] };
  seconds: number;
}

/**
 * The report's latent-space decoder (IV-D) on a cortexcast autoencoder: a readin from std-scaled
 * responses to the autoencoder's (scaled) latent, trained with MSE on the latents of the train
 * stimuli (AdamW, dropout), then chained with the frozen decoder into one `latent` bundle
 * (responses -> readin -> decoder -> resize -> z-scored image) that eval, compare and the server run
 * like any decoder. Readins: the report's MLP for the VAE, Linear + four convolutions (Table IV) for
 * feature maps. Selection on validation SSIML of the chained images.
 */
export async function trainLatent(o: TrainLatentOptions): Promise<TrainLatentResult> {
  const t0 = Date.now();
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const ae = readAutoencoder(o.autoencoder);
  const am = ae.manifest;
  const profile = o.profile ?? 'small';
  const frozenDir = o.finetune ? join(o.out, 'frozen') : o.out;
  const sessions = openSessions([o.data], frozenDir, { maxTrain: o.maxTrain, transform: 'none', quiet: o.quiet });
  const [sess] = sessions;
  const { data } = sess;
  const latent = am.latent;
  const L = latent[0] * latent[1] * latent[2];
  const targets = await encodeTrainImages(ae, data, o.threads);
  const settings = (lr: number, batch: number): DecoderSettings => ({
    profile,
    responseNoise: 0,
    batch,
    lr,
    weightDecay: o.weightDecay ?? 1e-4,
    seed: o.seed ?? 1,
    epochs: o.epochs ?? 200,
    threads: o.threads,
    transform: 'none',
    recipe: 'cortexcast',
    anchor: 'none',
    anchorFolds: 0,
    anchorContrast: false,
    contrastDownsample: 1,
    selection: { metric: 'ssiml', mode: 'min' },
    log,
  });
  const s = settings(o.lr ?? 1e-4, o.batch ?? 64);
  const chain = latentChain(ae, data, profile);
  const spec: TrainingSpec = {
    name: 'latent',
    outputName: DECODER_OUTPUT,
    batch: s.batch,
    seed: s.seed,
    threads: o.threads,
    model: (ctx, b) => {
      const input = ctx.g.input(DECODER_INPUT, 'float32', [b, data.neurons]);
      const z = chain.readin(ctx, input);
      return { inputs: [input], output: ctx.mode === 'train' ? z : chain.decode(ctx, z) };
    },
    objective: (ctx, out) => {
      const t = ctx.g.input('target', 'float32', [s.batch, ...latent]);
      return { targets: [t], loss: mseLoss(ctx, out, t) };
    },
    groups: [{ match: '', lr: s.lr, weightDecay: s.weightDecay }],
    optimizer: { kind: 'adamw' },
  };
  const G = await TrainingSession.create(spec);
  const fid = await FidComputer.create(64);
  const responses = new Float32Array(s.batch * data.neurons);
  const latents = new Float32Array(s.batch * L);
  const config = { kind: 'latent', space: am.space, autoencoder: { dir: ae.dir, ...chain.provenance }, profile, readin: chain.readinConfig, loss: 'mse-latent', batch: s.batch, lr: s.lr, weightDecay: s.weightDecay, seed: s.seed, data: sess.ds.dir, parameters: G.parameterCount };
  log(`latent (${am.space}, ${profile}): readin ${G.parameterCount.toLocaleString()} parameters to the ${latent.join('x')} latent of ${ae.dir}, ${data.neurons} neurons, batch ${s.batch}`);
  const recipe = decoderRecipe('latent', s, sessions, fid, config, {
    generator: G,
    graphs: () => [buildEvalGraph(spec, G.modelTensors(), false).graph],
    step: async (rows) => {
      rows[0].forEach((r, b) => {
        responses.set(data.train.responses.subarray(r * data.neurons, (r + 1) * data.neurons), b * data.neurons);
        latents.set(targets.subarray(r * L, (r + 1) * L), b * L);
      });
      const r = await G.trainStep({ [DECODER_INPUT]: tensor('float32', [s.batch, data.neurons], responses), target: tensor('float32', [s.batch, ...latent], latents) });
      return { loss: r.loss, ms: G.lastStepMs };
    },
    checkpointed: { readin: G },
  });
  const budgetFrozen = o.budgetSeconds !== undefined && o.finetune ? o.budgetSeconds * 0.6 : o.budgetSeconds;
  // With --finetune, the frozen stage is done once it has stopped: --resume continues the fine-tuning.
  const frozenDone = o.finetune && o.resume && existsSync(join(frozenDir, 'run', 'stop.json'));
  if (frozenDone) log(`latent: the frozen-decoder stage in ${frozenDir} has finished; resuming the fine-tuning`);
  const run1 = frozenDone
    ? finishedRun(frozenDir)
    : await runTraining(recipe, {
        run: join(frozenDir, 'run'),
        epochs: s.epochs,
        maxSteps: o.maxSteps,
        budgetSeconds: budgetFrozen,
        validateEvery: o.validateEvery ?? 100,
        patience: o.patience ?? 6,
        resume: o.resume,
        shuffleSeed: (e) => s.seed * 13 + e,
        startedAt: t0,
        quiet: o.quiet,
        log,
      });
  const [frozenManifest] = frozenDone ? [loadBundle(frozenDir).manifest] : await testBundles('latent (frozen decoder)', sessions, run1.best, log, t0);
  const frozen = { bundle: frozenDir, manifest: frozenManifest, best: run1.best, history: run1.history };
  await logLatency(frozenDir, log);
  if (!o.finetune) return { manifest: frozenManifest, frozen, seconds: (Date.now() - t0) / 1000 };
  const finetuned = await finetuneLatent(o, { ae, chain, sess, frozenDir, fid, settings: settings(o.finetuneLr ?? 2e-5, o.batch ?? 64), config, t0, log });
  return { manifest: finetuned.manifest, frozen, finetuned, seconds: (Date.now() - t0) / 1000 };
}

/** The history and best point of a run folder whose training has stopped (stop.json, metrics.json). */
function finishedRun(bundle: string): { history: RunRecord[]; best: RunRecord } {
  const run = join(bundle, 'run');
  const stop = JSON.parse(readFileSync(join(run, 'stop.json'), 'utf8')) as { bestStep?: number };
  const history = JSON.parse(readFileSync(join(run, 'metrics.json'), 'utf8')) as RunRecord[];
  const best = history.find((r) => r.step === stop.bestStep);
  if (!best) throw ccError('CC_ERR_CHECKPOINT', run, `stop.json names best step ${stop.bestStep}, which metrics.json does not hold`);
  return { history, best };
}

/** Batch-1 CPU decode time of a written bundle, through the server's runner (what a live stream pays per frame). */
async function logLatency(dir: string, log: (s: string) => void): Promise<void> {
  const t = await batchOneLatency(loadBundle(dir), 20);
  log(`latent ${dir}: batch-1 CPU decode p50 ${t.p50.toFixed(1)} ms, p99 ${t.p99.toFixed(1)} ms (2 threads)`);
}

/** The readin and the frozen decoder of a latent decoder, as graph builders. */
interface LatentChain {
  readin(ctx: LayerContext, responses: Value): Value;
  /** Scaled latent -> the dataset's z-scored image [B, 1, H, W], the decoder's trained weights loaded. */
  decode(ctx: LayerContext, latent: Value): Value;
  readinConfig: Record<string, unknown>;
  provenance: Record<string, unknown>;
}

function latentChain(ae: LoadedAutoencoder, data: DecoderSession['data'], profile: 'small' | 'paper'): LatentChain {
  const am = ae.manifest;
  const readinConfig = am.space === 'vae' ? MLP_READIN_PROFILES[profile] : CONV_READIN_PROFILES[profile];
  return {
    readinConfig: { ...readinConfig },
    provenance: { space: am.space, latent: am.latent, latentScale: am.latentScale, heldOut: am.heldOut.reconstruction, createdAt: am.createdAt },
    readin: (ctx, responses) => (am.space === 'vae' ? mlpReadin(ctx, responses, am.latent, MLP_READIN_PROFILES[profile]) : convReadin(ctx, responses, am.latent, CONV_READIN_PROFILES[profile])),
    decode: (ctx, z) => {
      const { g } = ctx;
      // The VAE's decoder takes the latent as its encoder made it; the feature decoder was trained on the scaled map.
      const grey =
        am.space === 'vae'
          ? vaeDecoder(ctx, g.op('Mul', [z, scalar(g, 'latent_unscale', 1 / am.latentScale)]), am.architecture as unknown as VaeConfig)
          : sigmoid(ctx, featureDecoder(ctx, z, am.architecture.decoder as FeatureDecoderConfig));
      loadTensorsInto(g, ae.decoderTensors, 'decoder/', ae.dir);
      return greyToZ(ctx, resizeImage(ctx, grey, data.height, data.width), data.prep.imageMean, data.prep.imageStd);
    },
  };
}

/** latentScale * encoder(train stimulus) for every train trial: the readin's regression targets. */
async function encodeTrainImages(ae: LoadedAutoencoder, data: DecoderSession['data'], threads?: number): Promise<Float32Array> {
  const { height: h, width: w } = ae.manifest.image;
  const L = ae.manifest.latent.reduce((a, b) => a * b, 1);
  const { session } = await createSession(ae.encoder, { intraOpThreads: threads });
  const out = new Float32Array(data.train.count * L);
  const P = data.height * data.width;
  for (let r0 = 0; r0 < data.train.count; r0 += 64) {
    const nb = Math.min(64, data.train.count - r0);
    const grey = tierToGrey(data, data.train.images.subarray(r0 * P, (r0 + nb) * P), nb, h, w);
    // The encoder's own tensor names: a feature network's output is named after its layer.
    const z = (await runOnce(session, { [session.inputNames[0]]: tensor('float32', [nb, 1, h, w], grey) }))[session.outputNames[0]].data as Float32Array;
    if (z.length !== nb * L) throw ccError('CC_ERR_AUTOENCODER', ae.dir, `encoder gave ${z.length / nb} values per image, the manifest's latent has ${L}`);
    for (let i = 0; i < z.length; i++) out[r0 * L + i] = z[i] * ae.manifest.latentScale;
  }
  return out;
}

/**
 * Fine-tune readin and decoder together on the images (MSE on z-scored pixels), from the frozen
 * version's best readin and the autoencoder's decoder; optionally with the cycle term
 * cycleWeight * mean_n (encoder(decoded)_n - r_n)^2 through a frozen trained encoder.
 */
async function finetuneLatent(
  o: TrainLatentOptions,
  c: { ae: LoadedAutoencoder; chain: LatentChain; sess: DecoderSession; frozenDir: string; fid: FidComputer; settings: DecoderSettings; config: Record<string, unknown>; t0: number; log: (s: string) => void },
): Promise<{ manifest: Manifest; best: RunRecord; history: RunRecord[]; bundle: string }> {
  const { sess, settings: s } = c;
  const { data } = sess;
  const sessions: DecoderSession[] = [{ ...sess, bundle: o.out }];
  const readinTensors = new Map<string, TensorData>();
  for (const [name, init] of readModel(new Uint8Array(readFileSync(join(c.frozenDir, 'model.onnx')))).graph.initializers) if (name.startsWith('readin/')) readinTensors.set(name, init.tensor);
  const cycle = o.cycleEncoder ? loadCycleEncoder(o.cycleEncoder, data) : undefined;
  const cycleWeight = o.cycleWeight ?? 0.1;
  const spec: TrainingSpec = {
    name: 'latent_finetune',
    outputName: DECODER_OUTPUT,
    batch: s.batch,
    seed: s.seed,
    threads: o.threads,
    model: (ctx, b) => {
      const input = ctx.g.input(DECODER_INPUT, 'float32', [b, data.neurons]);
      const z = c.chain.readin(ctx, input);
      loadTensorsInto(ctx.g, readinTensors, 'readin/', c.frozenDir);
      return { inputs: [input], output: c.chain.decode(ctx, z) };
    },
    objective: (ctx, out, model) => {
      const { g } = ctx;
      const t = g.input('target', 'float32', [s.batch, 1, data.height, data.width]);
      const pixels = mseLoss(ctx, out, t);
      if (!cycle) return { targets: [t], loss: pixels };
      const predicted = cycle.responses(ctx, out);
      const d = g.op('Sub', [predicted, model.inputs[0]]);
      const consistency = reduce(ctx, 'ReduceMean', g.op('Mul', [d, d]), [0, 1], false);
      return { targets: [t], loss: g.op('Add', [pixels, g.op('Mul', [consistency, scalar(g, 'cycle_weight', cycleWeight)])]), metrics: { pixels, cycle: consistency } };
    },
    groups: [{ match: '', lr: s.lr, weightDecay: s.weightDecay }],
    optimizer: { kind: 'adamw' },
  };
  const G = await TrainingSession.create(spec);
  const batch = await DecoderBatch.create(sessions, s.batch, G.stepInputNames);
  const config = { ...c.config, finetune: { lr: s.lr, from: c.frozenDir, cycle: cycle ? { encoder: o.cycleEncoder, weight: cycleWeight } : undefined }, parameters: G.parameterCount };
  c.log(`latent fine-tuning: readin + decoder, ${G.parameterCount.toLocaleString()} parameters, lr ${s.lr}${cycle ? `, cycle consistency x${cycleWeight} through ${o.cycleEncoder}` : ''}`);
  const recipe = decoderRecipe('latent', s, sessions, c.fid, config, {
    generator: G,
    graphs: () => [buildEvalGraph(spec, G.modelTensors(), false).graph],
    step: async (rows, rng: Rng) => {
      const r = await G.trainStep(await batch.fill(rows, rng));
      return { loss: r.loss, shown: r.metrics.pixels ?? r.loss, ms: G.lastStepMs };
    },
    checkpointed: { finetune: G },
  });
  const run = await runTraining(recipe, {
    run: join(o.out, 'run'),
    epochs: s.epochs,
    maxSteps: o.maxSteps,
    budgetSeconds: o.budgetSeconds,
    validateEvery: o.validateEvery ?? 100,
    patience: o.patience ?? 6,
    resume: o.resume,
    shuffleSeed: (e) => s.seed * 17 + e,
    startedAt: c.t0,
    quiet: o.quiet,
    log: c.log,
  });
  const [manifest] = await testBundles('latent (fine-tuned)', sessions, run.best, c.log, c.t0);
  await logLatency(o.out, c.log);
  return { manifest, best: run.best, history: run.history, bundle: o.out };
}

/** A trained single-session encoder rebuilt as frozen constants of another graph (eval mode: running statistics, no readout noise). */
function loadCycleEncoder(dir: string, data: DecoderSession['data']): { responses(ctx: LayerContext, image: Value): Value } {
  const enc = loadBundle(dir);
  if (enc.manifest.kind !== 'encoder') throw ccError('CC_ERR_WRONG_KIND', enc.dir, enc.manifest.kind, 'the cycle term needs an encoder bundle (cortexcast train encoder)');
  if (enc.unitIds.length !== data.neurons || enc.unitIds.some((u, i) => u !== data.unitIds[i])) throw ccError('CC_ERR_OPTION', `encoder ${enc.dir} predicts other neurons than the decoder's data: train it on the same session`);
  const cfg = (enc.manifest.training.config as { encoder?: EncoderConfig }).encoder;
  if (!cfg) throw ccError('CC_ERR_OPTION', `encoder ${enc.dir} does not record its architecture (training.config.encoder)`);
  const trained = readModel(enc.model).graph.initializers;
  return {
    responses: (ctx, image) => {
      const g = ctx.g;
      const before = new Set(g.initializers.keys());
      let out!: Value;
      g.scope('cycle', () => {
        const sub: LayerContext = { g, rng: new Rng(0), mode: 'eval' };
        const features = encoderCore(sub, image, cfg);
        const y = cfg.readout === 'gaussian' ? gaussianReadout(sub, features, data.neurons, cfg).y : factorizedReadout(sub, features, data.neurons).y;
        out = positiveRate(sub, y);
      });
      const landed = new Set<string>();
      for (const name of g.initializers.keys()) {
        if (before.has(name)) continue;
        const source = name.replace(/^cycle\//, '');
        const t = trained.get(source);
        if (!t) continue; // a constant the builder made identically
        if (t.tensor.dims.join('x') !== g.initializers.get(name)!.tensor.dims.join('x')) throw ccError('CC_ERR_OPTION', `encoder ${enc.dir}: tensor ${source} is ${t.tensor.dims.join('x')}, its recorded architecture needs ${g.initializers.get(name)!.tensor.dims.join('x')}`);
        g.setInitializer(name, t.tensor);
        landed.add(source);
      }
      const missed = [...trained.keys()].filter((k) => /^(core|readout)\//.test(k) && !landed.has(k));
      if (missed.length) throw ccError('CC_ERR_OPTION', `encoder ${enc.dir}: ${missed.length} trained tensors (${missed.slice(0, 3).join(', ')}) have no place in the architecture its manifest records`);
      return out;
    },
  };
}
