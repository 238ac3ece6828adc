import { join } from 'node:path';
import { ccError } from '../../common/errors.js';
import { VAE_PROFILES, vaeDecoder, vaeEncoder, vaeKl, vaeSample, type VaeConfig } from '../../models/architectures/autoencoder.js';
import { scalar, type LayerContext } from '../../models/layers.js';
import { newGraph, tensor, type Graph, type TensorData } from '../../models/onnx/index.js';
import { createSession, runOnce } from '../../models/ort.js';
import { Rng } from '../../models/rng.js';
import { mseLoss } from '../engine/losses.js';
import { TrainingSession, type TrainingSpec } from '../engine/trainer.js';
import { scoreImages } from '../eval/metrics/image-metrics.js';
import { reconstructionGrid, writeFile } from '../report/figures.js';
import { runTraining, type Recipe, type RunRecord } from '../run/loop.js';
import { openSessions } from '../decoders/sessions.js';
import { AE_IO, readAutoencoder, writeAutoencoder, type AutoencoderManifest } from './autoencoder-folder.js';
import { autoencoderImages, resampleHost, tierToGrey, type AutoencoderImageSet, type ImageSource } from './images.js';

/** What training either autoencoder takes (the VAE here, the feature decoder in train-feature-decoder.ts). */
export interface AutoencoderRunOptions {
  /** Datasets whose train-tier stimuli it learns; the first one's validation tier is the held-out set. */
  data: string[];
  out: string;
  run?: string;
  /** 'realtime' exists for the VAE only (VAE_PROFILES.realtime). */
  profile?: 'small' | 'paper' | 'realtime';
  /** Random crops of the npm photos no given dataset validates or tests on. */
  photoCrops?: number;
  batch?: number;
  lr?: number;
  epochs?: number;
  validateEvery?: number;
  maxSteps?: number;
  budgetSeconds?: number;
  patience?: number;
  resume?: boolean;
  seed?: number;
  threads?: number;
  quiet?: boolean;
  log?: (s: string) => void;
}

export interface TrainAutoencoderOptions extends AutoencoderRunOptions {
  /** Weight of the KL term against the per-pixel MSE (default 1e-4). Photo crops default to 12,000. */
  klWeight?: number;
}

export interface TrainAutoencoderResult {
  manifest: AutoencoderManifest;
  history: RunRecord[];
  best: RunRecord;
  steps: number;
  seconds: number;
}

/** Held-out images at the autoencoder's size (its input) and the dataset's (the score's). */
export interface HeldOut {
  source: ImageSource;
  count: number;
  grey: Float32Array;
}

export const HELD_OUT_MAX = 500;
const GRID = 10;

/**
 * Train the VAE latent space on images alone (the report's latent-space decoders; the SD-VAE's
 * geometry, trained here): MSE on [0, 1] pixels + klWeight * KL, AdamW. The held-out score is the
 * reconstruction of the first dataset's validation stimuli (photos no training image came from) at the
 * dataset's size, beside the score of predicting the mean train image.
 */
export async function trainAutoencoder(o: TrainAutoencoderOptions): Promise<TrainAutoencoderResult> {
  const t0 = Date.now();
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const run = o.run ?? join(o.out, 'run');
  const profile = o.profile ?? 'small';
  const cfg: VaeConfig = VAE_PROFILES[profile];
  const S = cfg.size;
  const batch = o.batch ?? 32;
  const seed = o.seed ?? 1;
  const klWeight = o.klWeight ?? 1e-4;
  if (!(klWeight >= 0)) throw ccError('CC_ERR_OPTION', `--kl-weight ${klWeight} must be 0 or more`);
  const sources: ImageSource[] = openSessions(o.data, o.out, { transform: 'none', quiet: o.quiet });
  const images = await autoencoderImages(sources, { height: S, width: S, photoCrops: o.photoCrops ?? 12000, seed, quiet: o.quiet });
  const held = heldOutSet(sources[0], S, S);
  log(`autoencoder (vae ${profile}): ${images.count.toLocaleString()} training images (${images.provenance.datasetStimuli} dataset stimuli, ${images.provenance.photoCrops} crops of ${images.provenance.photos.length} photos; never ${images.provenance.excludedPhotos.join(', ') || '-'}), held out ${held.count}`);
  const L = cfg.latentChannels;
  const latentShape: [number, number, number] = [L, S / 8, S / 8];
  // The training graph's posterior, for the objective's KL term (the builder runs just before it).
  let posterior: ReturnType<typeof vaeEncoder> | undefined;
  const spec: TrainingSpec = {
    name: 'autoencoder',
    batch,
    seed,
    threads: o.threads,
    outputName: AE_IO.reconstruction,
    model: (ctx, b) => {
      const input = ctx.g.input(AE_IO.image, 'float32', [b, 1, S, S]);
      const m = vaeEncoder(ctx, input, cfg);
      posterior = m;
      if (ctx.mode !== 'train') return { inputs: [input], output: vaeDecoder(ctx, m.mean, cfg) };
      const noise = ctx.g.input('noise', 'float32', [b, ...latentShape]);
      return { inputs: [input], output: vaeDecoder(ctx, vaeSample(ctx, m, noise), cfg), stepInputs: { noise } };
    },
    objective: (ctx: LayerContext, out, model) => {
      const { g } = ctx;
      const rec = mseLoss(ctx, out, model.inputs[0]);
      const kl = vaeKl(ctx, posterior!);
      return { targets: [], loss: g.op('Add', [rec, g.op('Mul', [kl, scalar(g, 'kl_weight', klWeight)])]), metrics: { reconstruction: rec, kl } };
    },
    groups: [{ match: '', lr: o.lr ?? 1e-3, weightDecay: 1e-4 }],
    optimizer: { kind: 'adamw' },
  };
  const G = await TrainingSession.create(spec);
  log(`autoencoder: ${G.parameterCount.toLocaleString()} parameters, latent ${latentShape.join('x')}, batch ${batch}, KL weight ${klWeight}`);
  const feedImages = new Float32Array(batch * S * S);
  const noise = new Float32Array(batch * L * (S / 8) ** 2);
  const config = { space: 'vae', profile, architecture: cfg, klWeight, batch, lr: spec.groups![0].lr, seed, photoCrops: images.provenance.photoCrops, data: o.data };
  const architecture = { ...cfg } as unknown as Record<string, unknown>;
  const recipe: Recipe = {
    name: 'autoencoder',
    trainCounts: [images.count],
    batch,
    config,
    selection: { metric: 'mse', mode: 'min' },
    curves: [
      { key: 'ssim', label: 'SSIM' },
      { key: 'mse', label: 'MSE' },
      { key: 'kl', label: 'KL' },
    ],
    get steps() {
      return G.step;
    },
    step: async (rows, rng) => {
      rows[0].forEach((r, b) => feedImages.set(images.pixels.subarray(r * S * S, (r + 1) * S * S), b * S * S));
      for (let i = 0; i < noise.length; i++) noise[i] = rng.normal();
      const r = await G.trainStep({ [AE_IO.image]: tensor('float32', [batch, 1, S, S], feedImages), [G.stepInputNames.noise]: tensor('float32', [batch, ...latentShape], noise) });
      lastKl = r.metrics.kl;
      return { loss: r.loss, shown: r.metrics.reconstruction, ms: G.lastStepMs };
    },
    validate: async () => {
      validated = await scoreNow();
      const { sc } = validated;
      return { scores: { ...sc.scores, kl: lastKl }, grid: sc.grid };
    },
    exportBest: async (rec) => {
      // The loop exports right after the validation that found the improvement: reuse its graphs and scores.
      const { parts, sc } = validated?.step === rec.step ? validated : await scoreNow();
      const latentScale = await latentScaleOf(parts.encoder, images, seed, o.threads);
      const manifest = writeAutoencoder(
        o.out,
        {
          space: 'vae',
          profile,
          image: { height: S, width: S },
          latent: latentShape,
          latentScale,
          architecture,
          images: { ...images.provenance, datasets: sources.map((s) => s.ds.dir) },
          heldOut: { dataset: held.source.ds.dir, count: held.count, reconstruction: sc.scores, meanImage: meanImageScores(images, held.source, held.count) },
          training: { step: rec.step, seconds: rec.seconds, config },
        },
        parts.encoder,
        parts.decoder,
      );
      writeFile(join(o.out, 'reconstructions.png'), reconstructionGrid(sc.grid.rows, sc.grid.count, sc.grid.height, sc.grid.width));
      lastManifest = manifest;
    },
    saveCheckpoint: (dir) => G.saveCheckpoint(join(dir, 'autoencoder')),
    loadCheckpoint: (dir) => void G.loadCheckpoint(join(dir, 'autoencoder')),
  };
  let lastKl = NaN;
  const scoreNow = async (): Promise<{ step: number; parts: ReturnType<typeof exportGraphs>; sc: Awaited<ReturnType<typeof scoreHeldOut>> }> => {
    const parts = exportGraphs(cfg, G.modelTensors());
    return { step: G.step, parts, sc: await scoreHeldOut(held, parts.autoencoder, o.threads) };
  };
  let validated: Awaited<ReturnType<typeof scoreNow>> | undefined;
  let lastManifest: AutoencoderManifest | undefined;
  const { manifest, history, best } = await runAutoencoderRecipe(recipe, o, { run, shuffleSeed: (e) => seed * 11 + e, startedAt: t0, label: 'autoencoder', log, written: () => lastManifest });
  return { manifest, history, best, steps: G.step, seconds: (Date.now() - t0) / 1000 };
}

/**
 * What both autoencoder recipes (VAE, feature decoder) share after their recipe is built: the
 * training loop at the autoencoders' cadence (validate every 200 steps, patience 8), then the
 * folder's held-out scores. `written` is the manifest the recipe's export wrote this invocation; a
 * resumed run whose best came before the resume reads the folder instead.
 */
export async function runAutoencoderRecipe(
  recipe: Recipe,
  o: AutoencoderRunOptions,
  x: { run: string; shuffleSeed: (epoch: number) => number; startedAt: number; label: string; log: (s: string) => void; written: () => AutoencoderManifest | undefined },
): Promise<{ manifest: AutoencoderManifest; history: RunRecord[]; best: RunRecord }> {
  const { history, best } = await runTraining(recipe, {
    run: x.run,
    epochs: o.epochs ?? 100,
    maxSteps: o.maxSteps,
    budgetSeconds: o.budgetSeconds,
    validateEvery: o.validateEvery ?? 200,
    patience: o.patience ?? 8,
    resume: o.resume,
    shuffleSeed: x.shuffleSeed,
    startedAt: x.startedAt,
    quiet: o.quiet,
    log: x.log,
  });
  const manifest = x.written() ?? readAutoencoder(o.out).manifest;
  const r = manifest.heldOut;
  x.log(`${x.label} ${o.out}: held-out SSIM ${r.reconstruction.ssim.toFixed(3)} MSE ${r.reconstruction.mse.toFixed(3)} (mean image: SSIM ${r.meanImage.ssim.toFixed(3)} MSE ${r.meanImage.mse.toFixed(3)}); best step ${best.step}; ${((Date.now() - x.startedAt) / 1000).toFixed(0)} s`);
  return { manifest, history, best };
}

/** Eval-mode graphs of the trained VAE: encoder (image -> posterior mean), decoder, and the two chained. */
export function exportGraphs(cfg: VaeConfig, tensors: Map<string, TensorData>): { encoder: Graph; decoder: Graph; autoencoder: Graph } {
  const S = cfg.size;
  const build = (name: string, f: (ctx: LayerContext) => void): Graph => {
    const g = newGraph(name);
    f({ g, rng: new Rng(0), mode: 'eval' });
    for (const [k] of g.initializers) {
      const t = tensors.get(k);
      if (t) g.setInitializer(k, t);
    }
    return g;
  };
  const encoder = build('vae_encoder', (ctx) => {
    const x = ctx.g.input(AE_IO.image, 'float32', ['batch', 1, S, S]);
    ctx.g.output(vaeEncoder(ctx, x, cfg).mean, AE_IO.latent);
  });
  const decoder = build('vae_decoder', (ctx) => {
    const z = ctx.g.input(AE_IO.latent, 'float32', ['batch', cfg.latentChannels, S / 8, S / 8]);
    ctx.g.output(vaeDecoder(ctx, z, cfg), AE_IO.image);
  });
  const autoencoder = build('vae', (ctx) => {
    const x = ctx.g.input(AE_IO.image, 'float32', ['batch', 1, S, S]);
    ctx.g.output(vaeDecoder(ctx, vaeEncoder(ctx, x, cfg).mean, cfg), AE_IO.reconstruction);
  });
  return { encoder, decoder, autoencoder };
}

export function heldOutSet(source: ImageSource, height: number, width: number): HeldOut {
  const v = source.data.validation;
  const count = Math.min(HELD_OUT_MAX, v.count);
  return { source, count, grey: tierToGrey(source.data, v.images, count, height, width) };
}

/** Grey reconstructions [count, S*S] -> the dataset's z-scored pixels at its size. */
function toDatasetZ(source: ImageSource, grey: Float32Array, count: number, gh: number, gw: number): Float32Array {
  const { height: H, width: W, prep } = source.data;
  const P = H * W;
  const out = new Float32Array(count * P);
  for (let i = 0; i < count; i++) {
    const o = out.subarray(i * P, (i + 1) * P);
    resampleHost(grey.subarray(i * gh * gw, (i + 1) * gh * gw), gh, gw, H, W, o);
    for (let k = 0; k < P; k++) o[k] = (o[k] * 255 - prep.imageMean) / prep.imageStd;
  }
  return out;
}

/** Run a grey-to-grey graph over the held-out set and score it against the dataset's validation stimuli. */
export async function scoreHeldOut(held: HeldOut, graph: Graph, threads?: number): Promise<HeldOutScore> {
  const { session } = await createSession(graph, { intraOpThreads: threads });
  const dims = graph.inputs[0].shape;
  const [gh, gw] = [dims[2] as number, dims[3] as number];
  const Pg = gh * gw;
  const out = graph.outputs[0];
  const [oh, ow] = [out.shape[2] as number, out.shape[3] as number];
  const recon = new Float32Array(held.count * oh * ow);
  for (let r0 = 0; r0 < held.count; r0 += 64) {
    const nb = Math.min(64, held.count - r0);
    const res = await runOnce(session, { [graph.inputs[0].name]: tensor('float32', [nb, 1, gh, gw], held.grey.subarray(r0 * Pg, (r0 + nb) * Pg)) });
    recon.set(res[out.name].data as Float32Array, r0 * oh * ow);
  }
  return scoreGrey(held.source, recon, held.count, oh, ow);
}

export interface HeldOutScore {
  scores: Record<string, number>;
  grid: { rows: { label: string; images: Float32Array }[]; count: number; height: number; width: number };
}

/** Score grey reconstructions [count, oh*ow] of the first `count` validation stimuli at the dataset's size (z-scored, as decoders are). */
export function scoreGrey(source: ImageSource, recon: Float32Array, count: number, oh: number, ow: number): HeldOutScore {
  const { data } = source;
  const P = data.height * data.width;
  const z = toDatasetZ(source, recon, count, oh, ow);
  const targets = data.validation.images.subarray(0, count * P);
  const sc = scoreImages(targets, z, count, data.height, data.width);
  const n = Math.min(GRID, count);
  return {
    scores: { ssim: sc.ssim, ssiml: sc.ssiml, mse: sc.mse, pixcorr: sc.pixcorr },
    grid: { rows: [{ label: 'held-out stimulus', images: targets.subarray(0, n * P) }, { label: 'autoencoder', images: z.subarray(0, n * P) }], count: n, height: data.height, width: data.width },
  };
}

/** The baseline every reconstruction must beat: the mean training image, for each of the first `count` validation stimuli. */
export function meanImageScores(images: AutoencoderImageSet, source: ImageSource, count: number): Record<string, number> {
  const Pg = images.height * images.width;
  const mean = new Float32Array(Pg);
  for (let i = 0; i < images.count; i++) for (let k = 0; k < Pg; k++) mean[k] += images.pixels[i * Pg + k] / images.count;
  const grey = new Float32Array(count * Pg);
  for (let i = 0; i < count; i++) grey.set(mean, i * Pg);
  return scoreGrey(source, grey, count, images.height, images.width).scores;
}

/** 1 / the std of the latent over (up to 2,048) training images: readins regress unit-variance targets. */
export async function latentScaleOf(encoder: Graph, images: AutoencoderImageSet, seed: number, threads?: number): Promise<number> {
  const { session } = await createSession(encoder, { intraOpThreads: threads });
  const rng = new Rng(seed * 5 + 1);
  const n = Math.min(2048, images.count);
  const rows = Array.from({ length: n }, () => rng.int(images.count));
  const Pg = images.height * images.width;
  let sum = 0;
  let sq = 0;
  let count = 0;
  for (let r0 = 0; r0 < n; r0 += 64) {
    const nb = Math.min(64, n - r0);
    const buf = new Float32Array(nb * Pg);
    rows.slice(r0, r0 + nb).forEach((r, b) => buf.set(images.pixels.subarray(r * Pg, (r + 1) * Pg), b * Pg));
    const out = (await runOnce(session, { [AE_IO.image]: tensor('float32', [nb, 1, images.height, images.width], buf) }))[AE_IO.latent].data as Float32Array;
    for (const v of out) {
      sum += v;
      sq += v * v;
      count++;
    }
  }
  const m = sum / count;
  return 1 / Math.sqrt(Math.max(1e-12, sq / count - m * m));
}
