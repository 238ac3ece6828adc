import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { ccError } from '../../common/errors.js';
import { progress } from '../../common/progress.js';
import { VERSION } from '../../common/version.js';
import { CNN_PROFILES, cnnDecoder } from '../../models/architectures/cnn.js';
import { GAN_PROFILES, ganDiscriminator, ganGenerator, multiSessionGenerator, type GanConfig, type MeiReadinInput } from '../../models/architectures/gan.js';
import { DECODER_INPUT, DECODER_OUTPUT } from '../../models/architectures/ridge.js';
import { applyResponseTransform, updateBundleMetrics, writeBundle, type Manifest, type ResponseTransform } from '../../models/bundle.js';
import { reduce, scalar, type LayerContext } from '../../models/layers.js';
import { tensor, writeModel, type Graph, type TensorData, type Value } from '../../models/onnx/index.js';
import { createSession, runOnce } from '../../models/ort.js';
import { Rng } from '../../models/rng.js';
import { DEFAULT_PREPROCESS, prepareDataset, type PreparedData } from '../../datasets/preprocess.js';
import { SensoriumDataset, sessionNames } from '../../datasets/sensorium.js';
import { evaluateBundle } from '../eval/evaluate.js';
import { loadMeis } from '../encoder/meis.js';
import { FidComputer } from '../eval/metrics/fid.js';
import { scoreImages } from '../eval/metrics/image-metrics.js';
import { LOSSES, lsganLoss } from '../engine/losses.js';
import { curvesSvg, reconstructionGrid, writeFile } from '../report/figures.js';
import { buildEvalGraph, TrainingSession, type TrainingSpec } from '../engine/trainer.js';

export type DecoderKindTrained = 'cnn' | 'gan';

export interface TrainDecoderOptions {
  kind: DecoderKindTrained;
  /** Dataset folder; the GAN takes several (B-All: one readin and discriminator head per session, shared core). */
  data: string | string[];
  /** Bundle folder (the best checkpoint by validation FID, exported); one sub-folder per session for B-All. */
  out: string;
  /** Run folder: config, per-epoch metrics, curves, grids, checkpoint (default <out>/run). */
  run?: string;
  /** 'appendix' (the report's appendix sizes) exists for the CNN only. */
  profile?: 'small' | 'paper' | 'appendix';
  epochs?: number;
  batch?: number;
  lr?: number;
  weightDecay?: number;
  /** Validate every this many steps (default: once per epoch). */
  validateEvery?: number;
  /** Stop after this many steps in all (time-boxed runs, tests). */
  maxSteps?: number;
  /**
   * Wall-clock budget of this invocation, seconds: stop before the step that would start after it is
   * spent, validate what was trained, keep the best bundle, and write why it stopped to stop.json.
   */
  budgetSeconds?: number;
  resume?: boolean;
  maxTrain?: number;
  seed?: number;
  threads?: number;
  /** GAN: MEI folder(s) (cortexcast meis; one per session), generator objective, readin, ablations. */
  meis?: string | string[];
  loss?: 'logssim' | 'mse' | 'mae';
  /** 'grid': the grid network alone on the MEI folder's neurons (MEIs not used). */
  readin?: 'mei' | 'grid' | 'fc';
  /** "T" ablation: log10(clamp(r, 1e-3)) on std-scaled responses. */
  transform?: boolean;
  /** "C" ablation: neuron coordinates appended to the context input. */
  coordinates?: boolean;
  quiet?: boolean;
  log?: (s: string) => void;
}

export interface EpochRecord {
  epoch: number;
  step: number;
  seconds: number;
  trainLoss: number;
  ssim: number;
  ssiml: number;
  mse: number;
  pixcorr: number;
  fid: number;
  [k: string]: number;
}

export interface TrainDecoderResult {
  /** The (first) session's bundle manifest; `manifests` has every session's. */
  manifest: Manifest;
  manifests: Manifest[];
  bundles: string[];
  history: EpochRecord[];
  best: EpochRecord;
  seconds: number;
  steps: number;
  run: string;
  /** The generator's training session, at its last step (not necessarily the exported best). */
  generator: TrainingSession;
}

const GRID_IMAGES = 10;

/**
 * Train the report's CNN or GAN decoder end to end (REFERENCE.md): AdamW 3e-4 / wd 3e-2, batch 16;
 * CNN: MSE; GAN: generator step (0.1 LSGAN + 0.9 log-SSIM, core gradients clamped to [-1, 1]) then
 * discriminator step (LSGAN with label noise). Validation (SSIM, MSE, PixCorr, FID-64) every epoch;
 * the best by validation FID is exported as the bundle; the run folder keeps everything needed to
 * see and resume the run.
 */
export async function trainDecoder(o: TrainDecoderOptions): Promise<TrainDecoderResult> {
  const t0 = Date.now();
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const run = o.run ?? join(o.out, 'run');
  mkdirSync(run, { recursive: true });
  const profile = o.profile ?? 'small';
  const batch = o.batch ?? 16;
  const lr = o.lr ?? 3e-4;
  const wd = o.weightDecay ?? 3e-2;
  const seed = o.seed ?? 1;
  const transform: ResponseTransform = o.transform ? 'log10clamp' : 'none';
  const dataDirs = Array.isArray(o.data) ? o.data : [o.data];
  if (!dataDirs.length) throw ccError('CC_ERR_OPTION', 'no --data folder given');
  if (o.kind === 'cnn' && dataDirs.length > 1) throw ccError('CC_ERR_OPTION', 'the CNN trains on one session; multi-session (B-All) training is the GAN\'s');
  const S = dataDirs.length;
  const names = sessionNames(dataDirs);
  const sessions: Session[] = dataDirs.map((dir, k) => {
    const ds = SensoriumDataset.open(dir);
    const data = prepareDataset(ds, DEFAULT_PREPROCESS, { quiet: o.quiet, maxTrain: o.maxTrain });
    if (transform !== 'none') for (const sp of [data.train, data.validation, data.test]) applyResponseTransform(sp.responses, new Float32Array(data.neurons).fill(1), transform, sp.responses);
    return { ds, data, bundle: S > 1 ? join(o.out, names[k]) : o.out };
  });
  const { height: H, width: W } = sessions[0].data;
  const P = H * W;

  let ganCfg: GanConfig | undefined;
  if (o.kind === 'gan') {
    if (profile === 'appendix') throw ccError('CC_ERR_OPTION', "profile 'appendix' is the CNN's; the GAN has 'paper' and 'small'");
    ganCfg = { ...GAN_PROFILES[profile], readin: o.readin ?? 'mei', coordinates: !!o.coordinates };
    if (ganCfg.readin !== 'fc') {
      const meiDirs = o.meis === undefined ? [] : Array.isArray(o.meis) ? o.meis : [o.meis];
      if (!meiDirs.length) throw ccError('CC_ERR_OPTION', `the GAN with ${ganCfg.readin === 'mei' ? 'MEI' : 'grid'} readin needs --meis <folder> (cortexcast meis${ganCfg.readin === 'grid' ? '; its neurons are used, not its MEIs' : ''})`);
      if (meiDirs.length !== S) throw ccError('CC_ERR_OPTION', `${S} sessions but ${meiDirs.length} MEI folders (one per session, in the same order)`);
      sessions.forEach((sess, k) => {
        const m = loadMeis(meiDirs[k]);
        if (m.height !== H || m.width !== W) throw ccError('CC_ERR_MEIS', meiDirs[k], `MEIs are ${m.height}x${m.width}, the decoder's images ${H}x${W}`);
        if (m.neuronIndex.some((i) => i >= sess.data.neurons)) throw ccError('CC_ERR_MEIS', meiDirs[k], `MEIs index neurons beyond session ${sess.ds.dir}'s ${sess.data.neurons}`);
        sess.mei = { meis: m.meis, neuronIndex: m.neuronIndex };
        if (ganCfg!.coordinates) {
          if (!sess.ds.coordinates) throw ccError('CC_ERR_DATASET_MISSING', sess.ds.dir, 'the coordinates ablation needs meta/neurons/cell_motor_coordinates.npy');
          sess.mei.coordinates = normalisedCoordinates(sess.ds.coordinates, m.neuronIndex);
        }
      });
    }
  }
  const neurons = sessions[0].data.neurons;
  const cnnCfg = CNN_PROFILES[profile];
  const lossName = o.loss ?? (o.kind === 'gan' ? 'logssim' : 'mse');

  const target = (ctx: LayerContext): Value => ctx.g.input('target', 'float32', [S * batch, 1, H, W]);
  const gSpec: TrainingSpec = {
    name: o.kind,
    outputName: DECODER_OUTPUT,
    batch,
    seed,
    threads: o.threads,
    model: (ctx, b) => {
      if (o.kind === 'cnn') {
        const m = cnnDecoder(ctx, neurons, b, cnnCfg);
        return { inputs: [m.input], output: m.output };
      }
      return multiSessionGenerator(ctx, b as number, sessions.map((x) => ({ neurons: x.data.neurons, mei: x.mei })), ganCfg!);
    },
    objective:
      o.kind === 'cnn'
        ? (ctx, out) => {
            const t = target(ctx);
            return { targets: [t], loss: LOSSES[lossName](ctx, out, t) };
          }
        : (ctx, fake) => {
            const { g } = ctx;
            const t = target(ctx);
            const score = ganDiscriminator(ctx, fake, ganCfg!, S);
            const adv = lsganLoss(ctx, score, scalar(g, 'real', 1));
            const recon = LOSSES[lossName](ctx, fake, t);
            const loss = g.op('Add', [g.op('Mul', [adv, scalar(g, 'w_adv', 0.1)]), g.op('Mul', [recon, scalar(g, 'w_recon', 0.9)])]);
            return { targets: [t], loss, metrics: { adversarial: adv, reconstruction: recon }, outputs: { fake } };
          },
    groups:
      o.kind === 'cnn'
        ? [{ match: '', lr, weightDecay: wd }]
        : [
            { match: 'disc/', lr: 0, external: true },
            { match: 'core/', lr, weightDecay: wd, clamp: 1 },
            { match: '', lr, weightDecay: wd },
          ],
    optimizer: { kind: 'adamw' },
  };
  /** Session k's decoder alone (its readin + the shared core): what its bundle holds. */
  const sessionSpec = (k: number): TrainingSpec =>
    o.kind === 'cnn'
      ? gSpec
      : {
          ...gSpec,
          model: (ctx, b) => {
            const m = ganGenerator(ctx, sessions[k].data.neurons, b, ganCfg!, sessions[k].mei, { index: k, count: S });
            return { inputs: [m.input], output: m.output };
          },
        };
  const G = await TrainingSession.create(gSpec);
  let D: TrainingSession | undefined;
  if (o.kind === 'gan') {
    D = await TrainingSession.create({
      name: 'disc',
      batch,
      seed: seed + 1,
      threads: o.threads,
      model: (ctx) => {
        const { g } = ctx;
        const real = g.input('d_real', 'float32', [S * batch, 1, H, W]);
        const fake = g.input('d_fake', 'float32', [S * batch, 1, H, W]);
        // Session-major rows: [real_0, fake_0, real_1, fake_1, ...], so each session's head sees its own.
        const bySession = (v: Value): Value => g.op('Reshape', [v, g.initializer('shape', tensor('int64', [5], [S, batch, 1, H, W]))]);
        const both = g.op('Reshape', [g.op('Concat', [bySession(real), bySession(fake)], { axis: 1 }), g.initializer('shape', tensor('int64', [4], [2 * S * batch, 1, H, W]))]);
        return { inputs: [real, fake], output: ganDiscriminator(ctx, both, ganCfg!, S) };
      },
      objective: (ctx, scores) => {
        const { g } = ctx;
        const lr_ = g.input('label_real', 'float32', [S * batch, 1]);
        const lf = g.input('label_fake', 'float32', [S * batch, 1]);
        const grouped = g.op('Reshape', [scores, g.initializer('shape', tensor('int64', [3], [S, 2, batch]))]);
        const part = (i: number): Value =>
          g.op('Reshape', [
            g.op('Slice', [grouped, g.initializer('s', tensor('int64', [1], [i])), g.initializer('e', tensor('int64', [1], [i + 1])), g.initializer('a', tensor('int64', [1], [1]))]),
            g.initializer('shape', tensor('int64', [2], [S * batch, 1])),
          ]);
        const [dReal, dFake] = [part(0), part(1)];
        const loss = g.op('Mul', [g.op('Add', [lsganLoss(ctx, dReal, lr_), lsganLoss(ctx, dFake, lf)]), scalar(g, 'half', 0.5)]);
        return { targets: [lr_, lf], loss, metrics: { real: reduce(ctx, 'ReduceMean', dReal, [0, 1], false), fake: reduce(ctx, 'ReduceMean', dFake, [0, 1], false) } };
      },
      groups: [{ match: '', lr, weightDecay: wd }],
      optimizer: { kind: 'adamw' },
    });
  }
  const config = {
    kind: o.kind,
    profile,
    architecture: o.kind === 'cnn' ? cnnCfg : ganCfg,
    meis: o.meis,
    meiNeurons: sessions[0].mei?.neuronIndex.length,
    sessions: S > 1 ? dataDirs : undefined,
    loss: lossName,
    transform,
    batch,
    lr,
    weightDecay: wd,
    epochs: o.epochs,
    seed,
    data: sessions[0].ds.dir,
    parameters: G.parameterCount,
    discriminatorParameters: D?.parameterCount,
  };
  writeFileSync(join(run, 'config.json'), JSON.stringify(config, null, 1));
  log(`${o.kind} (${profile}): ${G.parameterCount.toLocaleString()} parameters${D ? ` + discriminator ${D.parameterCount.toLocaleString()}` : ''}, ${sessions.map((x) => x.data.neurons).join(' + ')} neurons, batch ${batch}${S > 1 ? ` per session (${S} sessions)` : ''}, run folder ${run}`);

  const ckpt = join(run, 'checkpoint');
  let history: EpochRecord[] = [];
  let startEpoch = 1;
  if (o.resume && existsSync(join(ckpt, 'generator', 'checkpoint.json'))) {
    const extra = G.loadCheckpoint(join(ckpt, 'generator')) as { epoch: number; history: EpochRecord[] };
    if (D) D.loadCheckpoint(join(ckpt, 'discriminator'));
    history = extra.history;
    startEpoch = extra.epoch + 1;
    log(`${o.kind}: resumed after epoch ${extra.epoch} (step ${G.step})`);
  }

  const fid = await FidComputer.create(64);
  const rng = new Rng(seed * 7 + 3 + startEpoch);
  const epochs = o.epochs ?? 200;
  const stepsPerEpoch = Math.max(1, Math.floor(Math.max(...sessions.map((x) => x.data.train.count)) / batch));
  const orders = sessions.map((x) => [...Array(x.data.train.count).keys()]);
  const xbs = sessions.map((x) => new Float32Array(batch * x.data.neurons));
  const yb = new Float32Array(S * batch * P);
  const labels = { real: new Float32Array(S * batch), fake: new Float32Array(S * batch) };
  let best = history.reduce<EpochRecord | undefined>((b, r) => (!b || r.fid < b.fid ? r : b), undefined);
  const inputName = (k: number): string => (S > 1 ? `${DECODER_INPUT}_${k}` : DECODER_INPUT);

  const validate = async (epoch: number, trainLoss: number): Promise<void> => {
    const tensors = G.modelTensors();
    const scores: { ssim: number; ssiml: number; mse: number; pixcorr: number; fid: number }[] = [];
    const recons: Float32Array[] = [];
    const graphs = sessions.map((_, k) => buildEvalGraph(sessionSpec(k), tensors, false).graph);
    for (let k = 0; k < S; k++) {
      const { data } = sessions[k];
      const count = data.validation.count;
      const { session } = await createSession(graphs[k], { intraOpThreads: o.threads });
      const recon = new Float32Array(count * P);
      for (let r0 = 0; r0 < count; r0 += 64) {
        const nb = Math.min(64, count - r0);
        const out = await runOnce(session, { [DECODER_INPUT]: tensor('float32', [nb, data.neurons], data.validation.responses.subarray(r0 * data.neurons, (r0 + nb) * data.neurons)) });
        recon.set(out[DECODER_OUTPUT].data as Float32Array, r0 * P);
      }
      const sc = scoreImages(data.validation.images, recon, count, H, W);
      scores.push({ ssim: sc.ssim, ssiml: sc.ssiml, mse: sc.mse, pixcorr: sc.pixcorr, fid: await fid.fid(data.validation.images, recon, count, H, W) });
      recons.push(recon);
    }
    const avg = (key: keyof (typeof scores)[number]): number => scores.reduce((a, x) => a + x[key], 0) / S;
    const rec: EpochRecord = { epoch, step: G.step, seconds: (Date.now() - t0) / 1000, trainLoss, ssim: avg('ssim'), ssiml: avg('ssiml'), mse: avg('mse'), pixcorr: avg('pixcorr'), fid: avg('fid') };
    if (S > 1) scores.forEach((x, k) => (rec[`fid_${k}`] = x.fid));
    history.push(rec);
    const improved = !best || rec.fid < best.fid;
    log(`${o.kind} epoch ${epoch} step ${G.step}: train loss ${trainLoss.toFixed(4)}; validation SSIM ${rec.ssim.toFixed(3)} MSE ${rec.mse.toFixed(3)} PixCorr ${rec.pixcorr.toFixed(3)} FID ${rec.fid.toFixed(3)}${S > 1 ? ' (mean over sessions)' : ''}${improved ? ' (best)' : ''}`);
    if (improved) {
      best = rec;
      sessions.forEach((sess, k) => exportBundle(o, graphs[k], sess, config, rec, transform, scores[k]));
      const { data } = sessions[0];
      const n = Math.min(GRID_IMAGES, data.validation.count);
      writeFile(join(run, 'validation-grid.png'), reconstructionGrid([{ label: 'stimulus', images: data.validation.images.subarray(0, n * P) }, { label: `${o.kind} epoch ${epoch}`, images: recons[0].subarray(0, n * P) }], n, H, W));
    }
    writeRunFiles(run, o.kind, history);
    G.saveCheckpoint(join(ckpt, 'generator'), { epoch, history });
    D?.saveCheckpoint(join(ckpt, 'discriminator'), { epoch });
  };

  let stopped = false;
  let stopReason: 'epochs' | 'max-steps' | 'budget' = 'epochs';
  const firstStep = G.step;
  for (let epoch = startEpoch; epoch <= epochs && !stopped; epoch++) {
    orders.forEach((ord) => rng.shuffle(ord));
    const bar = progress(`${o.kind} epoch ${epoch}/${epochs}`, stepsPerEpoch, { quiet: o.quiet, extra: 'loss {loss} {ms} ms/step' });
    let lossSum = 0;
    let steps = 0;
    for (let s = 0; s < stepsPerEpoch; s++) {
      if (o.maxSteps !== undefined && G.step >= o.maxSteps) {
        stopped = true;
        stopReason = 'max-steps';
        break;
      }
      // At least one step per invocation, so a budget spent on setup still makes progress.
      if (o.budgetSeconds !== undefined && G.step > firstStep && (Date.now() - t0) / 1000 >= o.budgetSeconds) {
        stopped = true;
        stopReason = 'budget';
        break;
      }
      const feeds: Record<string, TensorData> = { target: tensor('float32', [S * batch, 1, H, W], yb) };
      sessions.forEach(({ data }, k) => {
        const n = data.neurons;
        for (let b = 0; b < batch; b++) {
          // Sessions with fewer trials wrap around within the epoch.
          const row = orders[k][(s * batch + b) % data.train.count];
          xbs[k].set(data.train.responses.subarray(row * n, (row + 1) * n), b * n);
          yb.set(data.train.images.subarray(row * P, (row + 1) * P), (k * batch + b) * P);
        }
        feeds[inputName(k)] = tensor('float32', [batch, n], xbs[k]);
      });
      const r = await G.trainStep(feeds, D ? D.currentTensors(G.externalParameterNames) : {});
      if (!Number.isFinite(r.loss)) throw ccError('CC_ERR_TRAINING_DIVERGED', o.kind, G.step, r.loss);
      if (D) {
        for (let b = 0; b < S * batch; b++) {
          labels.real[b] = rng.uniform(0.95, 1);
          labels.fake[b] = rng.uniform(0, 0.05);
        }
        await D.trainStep(
          { d_real: tensor('float32', [S * batch, 1, H, W], yb), label_real: tensor('float32', [S * batch, 1], labels.real), label_fake: tensor('float32', [S * batch, 1], labels.fake) },
          { d_fake: r.outputs.fake },
        );
      }
      lossSum += r.loss;
      steps++;
      bar.tick(1, { loss: r.loss.toFixed(4), ms: ((G.lastStepMs + (D?.lastStepMs ?? 0)) | 0).toString() });
      if (o.validateEvery && G.step % o.validateEvery === 0) await validate(epoch, lossSum / steps);
    }
    bar.stop();
    if (steps && !o.validateEvery) await validate(epoch, lossSum / steps);
    else if (steps && stopped && (!history.length || history[history.length - 1].step !== G.step)) await validate(epoch, lossSum / steps);
  }
  if (!best) throw ccError('CC_ERR_OPTION', 'training ran no steps (check --epochs / --max-steps / --budget)');
  const stop = { reason: stopReason, step: G.step, seconds: (Date.now() - t0) / 1000, budgetSeconds: o.budgetSeconds, maxSteps: o.maxSteps, bestEpoch: best.epoch, bestStep: best.step, bestValidationFid: best.fid };
  writeFileSync(join(run, 'stop.json'), JSON.stringify(stop, null, 1));
  if (stopReason !== 'epochs') log(`${o.kind}: stopped by ${stopReason === 'budget' ? `the ${o.budgetSeconds} s budget` : `--max-steps ${o.maxSteps}`} at step ${G.step}; the bundle holds the best validated step (${best.step}); --resume continues`);
  // Test-tier Table I row of each exported (best) bundle.
  const manifests: Manifest[] = [];
  for (const sess of sessions) {
    const ev = await evaluateBundle(sess.bundle, sess.ds.dir, { fid: 64 });
    updateBundleMetrics(sess.bundle, { test: { ...ev.metrics } });
    manifests.push(JSON.parse(readFileSync(join(sess.bundle, 'manifest.json'), 'utf8')) as Manifest);
    log(`${o.kind} ${sess.bundle}: best epoch ${best.epoch} (validation FID ${best.fid.toFixed(3)}); test SSIML ${ev.metrics.ssiml.toFixed(3)} MSE ${ev.metrics.mse.toFixed(3)} FID ${ev.metrics.fid?.toFixed(3)}; ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
  return { manifest: manifests[0], manifests, bundles: sessions.map((x) => x.bundle), history, best, seconds: (Date.now() - t0) / 1000, steps: G.step, run, generator: G };
}

interface Session {
  ds: SensoriumDataset;
  data: PreparedData;
  mei?: MeiReadinInput;
  /** Where this session's bundle goes. */
  bundle: string;
}

function exportBundle(o: TrainDecoderOptions, graph: Graph, sess: Session, config: Record<string, unknown>, rec: EpochRecord, transform: ResponseTransform, scores: Record<string, number>): void {
  const { data } = sess;
  writeBundle(sess.bundle, {
    name: `${o.kind}-${o.profile ?? 'small'}-${data.neurons}n`,
    kind: o.kind,
    model: writeModel(graph, { docString: `cortexcast ${o.kind} decoder: std-scaled responses -> z-scored image` }),
    inputName: DECODER_INPUT,
    outputName: DECODER_OUTPUT,
    opset: graph.opset,
    unitIds: data.unitIds,
    stdScale: data.prep.responseScale,
    responseScaling: data.prep.config.responseScaling,
    transform,
    height: data.height,
    width: data.width,
    pixelMean: data.prep.imageMean,
    pixelStd: data.prep.imageStd,
    training: { dataset: sess.ds.dir, config: { ...config, bestEpoch: rec.epoch, bestStep: rec.step }, seconds: rec.seconds },
    metrics: { validation: { ...scores } },
    version: VERSION,
    onnxruntime: ort.env.versions.node ?? 'unknown',
  });
}

function writeRunFiles(run: string, kind: string, history: EpochRecord[]): void {
  const cols = ['epoch', 'step', 'seconds', 'trainLoss', 'ssim', 'ssiml', 'mse', 'pixcorr', 'fid'];
  writeFileSync(join(run, 'metrics.csv'), [cols.join(','), ...history.map((r) => cols.map((c) => r[c]).join(','))].join('\n') + '\n');
  writeFileSync(join(run, 'metrics.json'), JSON.stringify(history, null, 1));
  const x = history.map((r) => r.step);
  writeFile(
    join(run, 'curves.svg'),
    curvesSvg(`${kind}: training loss and validation metrics by step`, x, [
      { label: 'train loss', values: history.map((r) => r.trainLoss) },
      { label: 'validation FID-64', values: history.map((r) => r.fid) },
      { label: 'validation SSIM', values: history.map((r) => r.ssim) },
      { label: 'validation MSE', values: history.map((r) => r.mse) },
    ]),
  );
}

/** Cortical (x, y) of the chosen neurons, scaled to [-1, 1]. */
function normalisedCoordinates(coords: Float64Array, idx: number[]): Float32Array {
  const out = new Float32Array(idx.length * 2);
  for (const axis of [0, 1]) {
    const vals = idx.map((i) => coords[i * 3 + axis]);
    const lo = Math.min(...vals);
    const hi = Math.max(...vals);
    vals.forEach((v, k) => (out[k * 2 + axis] = hi > lo ? ((v - lo) / (hi - lo)) * 2 - 1 : 0));
  }
  return out;
}
