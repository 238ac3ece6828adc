import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ccError } from '../../common/errors.js';
import { anchorChannels, anchorIsFed, DECODER_INPUT, DECODER_OUTPUT, type RidgeAnchor } from '../../models/architectures/ridge.js';
import type { MeiReadinInput } from '../../models/architectures/gan.js';
import { applyResponseTransform, updateBundleMetrics, type DecoderKind, type Manifest, type ResponseTransform } from '../../models/bundle.js';
import { tensor, type Graph, type Value } from '../../models/onnx/index.js';
import type { LayerContext } from '../../models/layers.js';
import { Gemm } from '../engine/linalg.js';
import { createSession, runOnce } from '../../models/ort.js';
import { DEFAULT_PREPROCESS, prepareDataset, type PreparedData } from '../../datasets/preprocess.js';
import { SensoriumDataset, sessionNames } from '../../datasets/sensorium.js';
import { openDataset } from '../../datasets/dataset-source.js';
import { evaluateBundle } from '../eval/evaluate.js';
import type { FidComputer } from '../eval/metrics/fid.js';
import { scoreImages } from '../eval/metrics/image-metrics.js';
import { resampleHost } from '../latent/images.js';
import { contrastTargets } from '../ridge/contrast.js';
import { fitRidge, type OutOfFold } from '../ridge/ridge.js';
import { dataSides, writeTrainedBundle } from '../run/export.js';
import type { Recipe, RunRecord, Validation } from '../run/loop.js';
import type { TrainingSession } from '../engine/trainer.js';
import { DECODER_CURVES, type DecoderSettings } from './settings.js';
import type { Rng } from '../../models/rng.js';
import type { EncoderPairs } from './encoder-pairs.js';

/** One recording session a decoder trains on: its data, where its bundle goes, its readin inputs. */
export interface DecoderSession {
  ds: SensoriumDataset;
  data: PreparedData;
  bundle: string;
  mei?: MeiReadinInput;
  anchor?: RidgeAnchor;
}

const GRID_IMAGES = 10;

/**
 * Open and prepare each dataset (optionally the "T" response transform, a neuron subset of a single
 * session: dataset column indices); B-All bundles go to <out>/<session>.
 */
export function openSessions(dirs: string[], out: string, o: { maxTrain?: number; transform: ResponseTransform; neurons?: readonly number[]; quiet?: boolean }): DecoderSession[] {
  if (!dirs.length) throw ccError('CC_ERR_OPTION', 'no --data folder given');
  const names = sessionNames(dirs);
  return dirs.map((dir, k) => {
    const ds = openDataset(dir);
    const data = prepareDataset(ds, DEFAULT_PREPROCESS, { quiet: o.quiet, maxTrain: o.maxTrain, neurons: o.neurons });
    if (o.transform !== 'none') for (const sp of [data.train, data.validation, data.test]) applyResponseTransform(sp.responses, new Float32Array(data.neurons).fill(1), o.transform, sp.responses);
    return { ds, data, bundle: dirs.length > 1 ? join(out, names[k]) : out };
  });
}

/**
 * Fit each session's closed-form ridge (train tier, alpha by validation MSE): the anchor of a
 * ridge-anchored decoder. With `folds` (>= 2) the anchor also carries out-of-fold train estimates,
 * which training then feeds instead of the in-sample ridge image. `contrast` adds the local-contrast
 * read-out, on a grid `contrastDownsample` times coarser than the image's.
 */
export async function attachRidgeAnchors(sessions: DecoderSession[], folds: number, log?: (s: string) => void, o: { contrast?: boolean; contrastDownsample?: number } = {}): Promise<void> {
  for (const s of sessions) {
    const outOfFold = folds >= 2 ? { folds, groups: stimulusGroups(s) } : undefined;
    // The contrast ridge picks its own regularisation (by validation MSE of the contrast maps).
    const reads = [await fitReadout(s.data, outOfFold, 'anchor', log)];
    if (o.contrast) reads.push(await fitReadout(contrastTargets(s.data, { downsample: o.contrastDownsample }), outOfFold, 'contrast', log));
    s.anchor = stackReadouts(reads, s.data);
  }
}

/** One fitted linear read-out on its grid [h, w], with its train-tier estimates there. */
export type Readout = { weights: Float32Array; bias: Float32Array; trainImages?: Float32Array; grid: [number, number] };

async function fitReadout(data: PreparedData, outOfFold: OutOfFold | undefined, tag: string, log?: (s: string) => void): Promise<Readout> {
  const fit = await fitRidge(data, { outOfFold, log: log && ((m) => log(`${tag} ${m}`)) });
  return { weights: fit.weights, bias: fit.bias, trainImages: fit.trainOutOfFold, grid: [data.height, data.width] };
}

/**
 * Read-outs [neurons, h_c*w_c] side by side as one anchor [neurons, sum of h_c*w_c] (channel-major
 * columns per row); train estimates at full size [trials, C*H*W], coarse ones upsampled as the graph does.
 */
export function stackReadouts(reads: Readout[], data: Pick<PreparedData, 'height' | 'width' | 'neurons'> & { train: { count: number } }): RidgeAnchor {
  const { height: H, width: W, neurons } = data;
  const P = H * W;
  const C = reads.length;
  const base = { height: H, width: W, channels: C };
  if (C === 1) return { ...base, weights: reads[0].weights, bias: reads[0].bias, trainImages: reads[0].trainImages };
  const sizes = reads.map((r) => r.grid[0] * r.grid[1]);
  const interleave = (parts: Float32Array[], rows: number, widths: number[]): Float32Array => {
    const row = widths.reduce((a, b) => a + b, 0);
    const out = new Float32Array(rows * row);
    for (let r = 0; r < rows; r++) {
      let at = r * row;
      parts.forEach((m, c) => {
        out.set(m.subarray(r * widths[c], (r + 1) * widths[c]), at);
        at += widths[c];
      });
    }
    return out;
  };
  const coarse = reads.some((r) => r.grid[0] !== H || r.grid[1] !== W);
  let fed: Float32Array | undefined;
  if (reads.every((r) => r.trainImages)) {
    const trials = data.train.count;
    const full = reads.map((r) => upsampled(r.trainImages!, trials, r.grid, H, W));
    fed = interleave(full, trials, reads.map(() => P));
  }
  return {
    ...base,
    ...(coarse && { grids: reads.map((r) => r.grid) }),
    weights: interleave(reads.map((r) => r.weights), neurons, sizes),
    bias: interleave(reads.map((r) => r.bias), 1, sizes),
    trainImages: fed,
  };
}

/** Images [count, h*w] at full size [count, H*W], resampled as the graph's resizeImage does (no copy when already full size). */
function upsampled(images: Float32Array, count: number, [h, w]: readonly [number, number], H: number, W: number): Float32Array {
  if (h === H && w === W) return images;
  const out = new Float32Array(count * H * W);
  for (let i = 0; i < count; i++) resampleHost(images.subarray(i * h * w, (i + 1) * h * w), h, w, H, W, out.subarray(i * H * W, (i + 1) * H * W));
  return out;
}

/**
 * Source photo of each train row where the simulator recorded it (meta/simulation/params.json):
 * cortexcast synth cuts validation and test crops from photos train never sees, so the anchor's
 * folds leave whole photos out. Other datasets (independent images) fold by row.
 */
function stimulusGroups(s: DecoderSession): number[] | undefined {
  const sim = s.ds.simulation() as { trials?: { photo?: unknown }[] } | undefined;
  const photos = s.data.train.trials.map((t) => sim?.trials?.[t[0]]?.photo);
  if (photos.some((p) => typeof p !== 'string')) return undefined;
  const ids = new Map<unknown, number>();
  return photos.map((p) => ids.get(p) ?? ids.set(p, ids.size).get(p)!);
}

/** The step inputs (`anchor_<k>`) of a training graph whose ridge images are fed (anchorIsFed), else none. */
export function fedAnchorInputs(ctx: LayerContext, sessions: DecoderSession[], bases: Value[] | undefined): Record<string, Value> | undefined {
  if (!bases) return undefined;
  const fed = bases.flatMap((v, k) => (sessions[k].anchor && anchorIsFed(ctx, sessions[k].anchor) ? [[`anchor_${k}`, v] as const] : []));
  return fed.length ? Object.fromEntries(fed) : undefined;
}

/** Decode every validation trial of each session with its exported graph and score it (Table I metrics + SSIM, PixCorr). */
export async function validateDecoders(name: string, graphs: Graph[], sessions: DecoderSession[], fid: FidComputer, threads?: number): Promise<Validation> {
  const perSession: Record<string, number>[] = [];
  let firstRecon: Float32Array | undefined;
  for (let k = 0; k < sessions.length; k++) {
    const { data } = sessions[k];
    const { height: H, width: W } = data;
    const P = H * W;
    const count = data.validation.count;
    const { session } = await createSession(graphs[k], { intraOpThreads: threads });
    const recon = new Float32Array(count * P);
    for (let r0 = 0; r0 < count; r0 += 64) {
      const nb = Math.min(64, count - r0);
      const out = await runOnce(session, { [DECODER_INPUT]: tensor('float32', [nb, data.neurons], data.validation.responses.subarray(r0 * data.neurons, (r0 + nb) * data.neurons)) });
      recon.set(out[DECODER_OUTPUT].data as Float32Array, r0 * P);
    }
    const sc = scoreImages(data.validation.images, recon, count, H, W);
    perSession.push({ ssim: sc.ssim, ssiml: sc.ssiml, mse: sc.mse, pixcorr: sc.pixcorr, fid: await fid.fid(data.validation.images, recon, count, H, W) });
    firstRecon ??= recon;
  }
  const S = sessions.length;
  const scores: Record<string, number> = {};
  for (const key of Object.keys(perSession[0])) scores[key] = perSession.reduce((a, x) => a + x[key], 0) / S;
  if (S > 1) perSession.forEach((x, k) => (scores[`fid_${k}`] = x.fid));
  const { data } = sessions[0];
  const n = Math.min(GRID_IMAGES, data.validation.count);
  const P = data.height * data.width;
  return {
    scores,
    grid: { rows: [{ label: 'stimulus', images: data.validation.images.subarray(0, n * P) }, { label: name, images: firstRecon!.subarray(0, n * P) }], count: n, height: data.height, width: data.width },
  };
}

/** Write each session's bundle from its exported graph, with the run's config and the best point's validation scores. */
export function exportDecoderBundles(
  kind: DecoderKind,
  profile: string,
  graphs: Graph[],
  sessions: DecoderSession[],
  config: Record<string, unknown>,
  rec: RunRecord,
  transform: ResponseTransform,
): void {
  sessions.forEach((sess, k) => {
    const { data } = sess;
    const own = sessions.length > 1 ? { fid: rec[`fid_${k}`] } : {};
    writeTrainedBundle(sess.bundle, {
      name: `${kind}-${profile}-${data.neurons}n`,
      kind,
      graph: graphs[k],
      docString: `cortexcast ${kind} decoder: std-scaled responses -> z-scored image`,
      inputName: DECODER_INPUT,
      outputName: DECODER_OUTPUT,
      ...dataSides(data),
      transform,
      training: { dataset: sess.ds.dir, config: { ...config, bestEpoch: rec.epoch, bestStep: rec.step }, seconds: rec.seconds },
      metrics: { validation: { ssim: rec.ssim, ssiml: rec.ssiml, mse: rec.mse, pixcorr: rec.pixcorr, fid: rec.fid, ...own } },
    });
  });
}

/** Test-tier Table I row of each exported (best) bundle, recorded in its manifest. */
export async function testBundles(name: string, sessions: DecoderSession[], best: RunRecord, log: (s: string) => void, t0: number): Promise<Manifest[]> {
  const manifests: Manifest[] = [];
  for (const sess of sessions) {
    const ev = await evaluateBundle(sess.bundle, sess.ds.dir, { fid: 64 });
    updateBundleMetrics(sess.bundle, { test: { ...ev.metrics } });
    manifests.push(JSON.parse(readFileSync(join(sess.bundle, 'manifest.json'), 'utf8')) as Manifest);
    log(`${name} ${sess.bundle}: best epoch ${best.epoch} step ${best.step}; test SSIML ${ev.metrics.ssiml.toFixed(3)} MSE ${ev.metrics.mse.toFixed(3)} FID ${ev.metrics.fid?.toFixed(3)}; ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
  return manifests;
}

/** Responses and target images of these train rows (per session) in reused buffers: the generator's feeds. */
export class DecoderBatch {
  readonly responses: Float32Array[];
  readonly images: Float32Array;
  /** Session k's fed ridge images (graph input name and buffer), where its training graph takes them. */
  private readonly anchors: ({ input: string; channels: number; images: Float32Array } | undefined)[];
  private constructor(
    private readonly sessions: DecoderSession[],
    readonly batch: number,
    stepInputNames: Record<string, string>,
    /** Encoder-made pairs replacing the first `round(fraction * batch)` rows of the first session's batch. */
    private readonly pairs?: { source: EncoderPairs; fraction: number },
    /** Ridge images of encoder-made rows are computed (they have no out-of-fold estimate), and those of response noise. */
    private readonly gemm?: Gemm,
    /** Standard deviation of the noise added to every row's (std-scaled) responses; 0: none. */
    private readonly responseNoise = 0,
  ) {
    this.responses = sessions.map((s) => new Float32Array(batch * s.data.neurons));
    const { height: H, width: W } = sessions[0].data;
    this.images = new Float32Array(sessions.length * batch * H * W);
    this.anchors = sessions.map((s, k) => {
      const input = stepInputNames[`anchor_${k}`];
      // A fed anchor input exists only where the session has an anchor.
      return input ? { input, channels: s.anchor!.channels, images: new Float32Array(batch * s.anchor!.channels * H * W) } : undefined;
    });
  }

  static async create(sessions: DecoderSession[], batch: number, stepInputNames: Record<string, string>, pairs?: { source: EncoderPairs; fraction: number }, responseNoise = 0): Promise<DecoderBatch> {
    const needsGemm = (!!pairs || responseNoise > 0) && Object.keys(stepInputNames).some((k) => k.startsWith('anchor_'));
    return new DecoderBatch(sessions, batch, stepInputNames, pairs, needsGemm ? await Gemm.create() : undefined, responseNoise);
  }

  /** Input k is `responses` alone, `responses_<k>` in a multi-session (B-All) model. */
  inputName(k: number): string {
    return this.sessions.length > 1 ? `${DECODER_INPUT}_${k}` : DECODER_INPUT;
  }

  async fill(rows: number[][], rng: Rng): Promise<Record<string, ReturnType<typeof tensor>>> {
    const { height: H, width: W } = this.sessions[0].data;
    const P = H * W;
    const S = this.sessions.length;
    const feeds: Record<string, ReturnType<typeof tensor>> = { target: tensor('float32', [S * this.batch, 1, H, W], this.images) };
    this.sessions.forEach(({ data }, k) => {
      const n = data.neurons;
      rows[k].forEach((row, b) => {
        this.responses[k].set(data.train.responses.subarray(row * n, (row + 1) * n), b * n);
        this.images.set(data.train.images.subarray(row * P, (row + 1) * P), (k * this.batch + b) * P);
      });
      feeds[this.inputName(k)] = tensor('float32', [this.batch, n], this.responses[k]);
    });
    this.anchors.forEach((a, k) => {
      if (!a) return;
      const fed = this.sessions[k].anchor!.trainImages!;
      const CP = a.channels * P;
      rows[k].forEach((row, b) => a.images.set(fed.subarray(row * CP, (row + 1) * CP), b * CP));
      feeds[a.input] = tensor('float32', [this.batch, a.channels, H, W], a.images);
    });
    const made = this.pairs ? Math.round(this.pairs.fraction * this.batch) : 0;
    if (made) {
      const slots = [...Array(made).keys()];
      await this.pairs!.source.fill(rows[0].slice(0, made), slots, rng, this.responses[0], this.images);
      if (this.anchors[0]) await this.ridgeOfMadeRows(made);
    }
    if (this.responseNoise > 0) for (let k = 0; k < this.sessions.length; k++) await this.addResponseNoise(k, rng);
    return feeds;
  }

  /**
   * Noise augmentation: e ~ N(0, responseNoise^2) per neuron and row, added to the responses; a fed
   * ridge image (the read-out of the responses, fed rather than computed in training) moves by the
   * read-out of e, so both inputs stay the ones a noisier trial would have given.
   */
  private async addResponseNoise(k: number, rng: Rng): Promise<void> {
    const { data, anchor } = this.sessions[k];
    const n = data.neurons;
    const noise = Float32Array.from({ length: this.batch * n }, () => this.responseNoise * rng.normal());
    const responses = this.responses[k];
    for (let i = 0; i < noise.length; i++) responses[i] += noise[i];
    const fed = this.anchors[k];
    if (!fed) return;
    const a = anchor!;
    const P = data.height * data.width;
    const { channels, columns: cols } = anchorChannels(a);
    const moved = await this.gemm!.mul(noise, a.weights, this.batch, n, cols);
    for (const [c, { grid, offset, size }] of channels.entries()) {
      const part = new Float32Array(this.batch * size);
      for (let r = 0; r < this.batch; r++) part.set(moved.subarray(r * cols + offset, r * cols + offset + size), r * size);
      const full = upsampled(part, this.batch, grid, data.height, data.width);
      for (let r = 0; r < this.batch; r++) {
        const at = (r * a.channels + c) * P;
        for (let j = 0; j < P; j++) fed.images[at + j] += full[r * P + j];
      }
    }
  }

  private async ridgeOfMadeRows(made: number): Promise<void> {
    const { data, anchor } = this.sessions[0];
    const a = anchor!;
    const P = data.height * data.width;
    const { channels, columns: cols } = anchorChannels(a);
    const est = await this.gemm!.mul(this.responses[0].subarray(0, made * data.neurons), a.weights, made, data.neurons, cols);
    const out = this.anchors[0]!.images;
    for (const [c, { grid, offset, size: n }] of channels.entries()) {
      const part = new Float32Array(made * n);
      for (let r = 0; r < made; r++) for (let j = 0; j < n; j++) part[r * n + j] = est[r * cols + offset + j] + a.bias[offset + j];
      const full = upsampled(part, made, grid, data.height, data.width);
      for (let r = 0; r < made; r++) out.set(full.subarray(r * P, (r + 1) * P), (r * a.channels + c) * P);
    }
  }
}

/** What every decoder's config.json records about the shared settings. */
export function sharedConfig(s: DecoderSettings): Record<string, unknown> {
  return {
    recipe: s.recipe,
    anchor: s.anchor,
    anchorFolds: s.anchor === 'ridge' ? s.anchorFolds : undefined,
    // The grid only where it is coarse: a full-size run's config reads as it did before the option existed.
    ...(s.anchorContrast && { anchorContrast: true, ...(s.contrastDownsample !== 1 && { contrastDownsample: s.contrastDownsample }) }),
    encoderPairs: s.pairs ? { encoder: s.pairs.source.encoder, fraction: s.pairs.fraction } : undefined,
    // Only when on: a run's config reads as it did before the option existed.
    ...(s.responseNoise > 0 && { responseNoise: s.responseNoise }),
    transform: s.transform,
    batch: s.batch,
    lr: s.lr,
    weightDecay: s.weightDecay,
    epochs: s.epochs,
    seed: s.seed,
  };
}

/**
 * A decoder recipe from its own parts (the step, the exported graphs, the checkpointed sessions):
 * validation, export and selection are the same for every decoder.
 */
export function decoderRecipe(
  kind: DecoderKind,
  s: DecoderSettings,
  sessions: DecoderSession[],
  fid: FidComputer,
  config: Record<string, unknown>,
  parts: { generator: TrainingSession; graphs: () => Graph[]; step: Recipe['step']; checkpointed: Record<string, TrainingSession> },
): Recipe {
  const G = parts.generator;
  // The graphs validated last: an improvement exports exactly those instead of rebuilding them.
  let validated: { step: number; graphs: Graph[] } | undefined;
  const graphsNow = (): Graph[] => {
    if (validated?.step !== G.step) validated = { step: G.step, graphs: parts.graphs() };
    return validated.graphs;
  };
  return {
    name: kind,
    trainCounts: sessions.map((x) => x.data.train.count),
    batch: s.batch,
    config,
    selection: s.selection,
    curves: DECODER_CURVES,
    get steps() {
      return G.step;
    },
    step: parts.step,
    validate: () => validateDecoders(`${kind} step ${G.step}`, graphsNow(), sessions, fid, s.threads),
    exportBest: async (rec) => exportDecoderBundles(kind, s.profile, graphsNow(), sessions, config, rec, s.transform),
    saveCheckpoint: (dir) => Object.entries(parts.checkpointed).forEach(([name, ts]) => ts.saveCheckpoint(join(dir, name))),
    loadCheckpoint: (dir) => Object.entries(parts.checkpointed).forEach(([name, ts]) => void ts.loadCheckpoint(join(dir, name))),
  };
}
