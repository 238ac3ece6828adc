import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ccError } from '../../common/errors.js';
import { FEATURE_DECODER_PROFILES, featureDecoder, type FeatureDecoderConfig } from '../../models/architectures/autoencoder.js';
import { reduce, scalar, sigmoid, type LayerContext } from '../../models/layers.js';
import { newGraph, tensor, type Graph, type TensorData, type Value } from '../../models/onnx/index.js';
import { createSession, runOnce } from '../../models/ort.js';
import { Rng } from '../../models/rng.js';
import { openSessions } from '../decoders/sessions.js';
import { TrainingSession, type TrainingSpec } from '../engine/trainer.js';
import { reconstructionGrid, writeFile } from '../report/figures.js';
import type { Recipe, RunRecord } from '../run/loop.js';
import { AE_IO, writeAutoencoder, type AutoencoderManifest } from './autoencoder-folder.js';
import { extractFeatures, FEATURE_INPUT, FEATURE_LAYERS, featureModel } from './feature-network.js';
import { autoencoderImages, tierToGrey, type ImageSource } from './images.js';
import { featureLayerTable, formatLayerTable } from './layer-selection.js';
import { HELD_OUT_MAX, meanImageScores, runAutoencoderRecipe, scoreGrey, type AutoencoderRunOptions, type HeldOutScore } from './train-autoencoder.js';

export interface TrainFeatureDecoderOptions extends AutoencoderRunOptions {
  /** MobileNetV2 layer whose map is the latent; default: the best of the layer table (validation response prediction). Photo crops default to 6,000 (features are large). */
  layer?: string;
}

/**
 * The feature-space latent (the report's ResNet50 variant, on MobileNetV2 from nsfwjs, the one image
 * network here that is not FID's): the layer is picked by how well its features predict the recorded
 * responses (ridge, validation correlation - how the report's source chose layer3.0.downsample.0),
 * then a transposed-conv decoder from that map to the image is trained on images alone with BCE on
 * grey levels (the report's BCE on min-max pixels would lose each image's brightness, which the
 * z-scored output needs). The network is frozen: only the decoder trains.
 */
export async function trainFeatureDecoder(o: TrainFeatureDecoderOptions): Promise<{ manifest: AutoencoderManifest; history: RunRecord[]; best: RunRecord; seconds: number }> {
  const t0 = Date.now();
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const profile = o.profile ?? 'small';
  if (profile === 'realtime') throw ccError('CC_ERR_OPTION', "profile 'realtime' is the VAE's (--space vae); the feature decoder has 'small' and 'paper'");
  const seed = o.seed ?? 1;
  const batch = o.batch ?? 32;
  const sources: ImageSource[] = openSessions(o.data, o.out, { transform: 'none', quiet: o.quiet });
  const { data } = sources[0];
  const [H, W] = [data.height, data.width];
  let layer = o.layer ?? (o.resume ? previousLayer(o.out) : undefined);
  if (layer === undefined) {
    // Only maps the decoder can grow to the image by x2 steps (stride 32 gives 4.5 x 8 rows at 36 x 64).
    const candidates = FEATURE_LAYERS.filter((l) => Number.isInteger(Math.log2(l.stride)) && H % l.stride === 0 && W % l.stride === 0).map((l) => l.name);
    const table = await featureLayerTable(data, { layers: candidates, threads: o.threads, log: o.quiet ? undefined : log });
    const text = formatLayerTable(table.rows, { pixels: table.pixels });
    log(text);
    mkdirSync(o.out, { recursive: true });
    writeFileSync(join(o.out, 'layer-table.txt'), text + '\n');
    layer = table.best.layer;
    log(`feature decoder: layer ${layer} (best validation response correlation ${table.best.correlation.toFixed(3)})`);
  } else if (!FEATURE_LAYERS.some((l) => l.name === layer)) throw ccError('CC_ERR_OPTION', `--layer ${layer} is not a candidate (${FEATURE_LAYERS.map((l) => l.name).join(', ')})`);
  const images = await autoencoderImages(sources, { height: H, width: W, photoCrops: o.photoCrops ?? 6000, seed, quiet: o.quiet });
  const features = await extractFeatures(images.pixels, images.count, H, W, layer, { threads: o.threads });
  const [C, h, w] = features.shape;
  const F = C * h * w;
  const heldCount = Math.min(HELD_OUT_MAX, data.validation.count);
  const heldGrey = tierToGrey(data, data.validation.images, heldCount, H, W);
  const heldFeatures = await extractFeatures(heldGrey, heldCount, H, W, layer, { threads: o.threads });
  const latentScale = scaleOf(features.features);
  const upsample = H / h;
  if (upsample !== W / w) throw ccError('CC_ERR_OPTION', `layer ${layer}'s ${h}x${w} map does not divide the ${H}x${W} image evenly`);
  const cfg: FeatureDecoderConfig = FEATURE_DECODER_PROFILES[profile](upsample);
  const spec: TrainingSpec = {
    name: 'feature_decoder',
    batch,
    seed,
    threads: o.threads,
    outputName: AE_IO.image,
    model: (ctx, b) => {
      const z = ctx.g.input(AE_IO.latent, 'float32', [b, C, h, w]);
      return { inputs: [z], output: featureDecoder(ctx, z, cfg) };
    },
    objective: (ctx: LayerContext, logits) => {
      const t = ctx.g.input('target', 'float32', [batch, 1, H, W]);
      return { targets: [t], loss: bceWithLogits(ctx, logits, t) };
    },
    groups: [{ match: '', lr: o.lr ?? 5e-4, weightDecay: 5e-3 }],
    optimizer: { kind: 'adamw' },
  };
  const G = await TrainingSession.create(spec);
  log(`feature decoder (${profile}): ${layer} ${C}x${h}x${w} -> ${H}x${W}, ${G.parameterCount.toLocaleString()} parameters, ${images.count.toLocaleString()} training images, batch ${batch}`);
  const feedZ = new Float32Array(batch * F);
  const feedT = new Float32Array(batch * H * W);
  const config = { space: 'features', network: 'mobilenet_v2 (nsfwjs)', layer, profile, decoder: cfg, batch, lr: spec.groups![0].lr, seed, photoCrops: images.provenance.photoCrops, data: o.data };
  let lastManifest: AutoencoderManifest | undefined;
  const validate = async (tensors: Map<string, TensorData>): Promise<HeldOutScore> => {
    const dec = decoderGraph(cfg, [C, h, w], tensors, latentScale);
    const { session } = await createSession(dec, { intraOpThreads: o.threads });
    const recon = new Float32Array(heldCount * H * W);
    for (let r0 = 0; r0 < heldCount; r0 += 64) {
      const nb = Math.min(64, heldCount - r0);
      const res = await runOnce(session, { [AE_IO.latent]: tensor('float32', [nb, C, h, w], heldFeatures.features.subarray(r0 * F, (r0 + nb) * F)) });
      recon.set(res[AE_IO.image].data as Float32Array, r0 * H * W);
    }
    return scoreGrey(sources[0], recon, heldCount, H, W);
  };
  const scoreNow = async (): Promise<{ step: number; tensors: Map<string, TensorData>; sc: HeldOutScore }> => {
    const tensors = G.modelTensors();
    return { step: G.step, tensors, sc: await validate(tensors) };
  };
  let validated: Awaited<ReturnType<typeof scoreNow>> | undefined;
  const recipe: Recipe = {
    name: 'feature-decoder',
    trainCounts: [images.count],
    batch,
    config,
    selection: { metric: 'mse', mode: 'min' },
    curves: [
      { key: 'ssim', label: 'SSIM' },
      { key: 'mse', label: 'MSE' },
    ],
    get steps() {
      return G.step;
    },
    step: async (rows) => {
      rows[0].forEach((r, b) => {
        feedZ.set(features.features.subarray(r * F, (r + 1) * F), b * F);
        feedT.set(images.pixels.subarray(r * H * W, (r + 1) * H * W), b * H * W);
      });
      for (let i = 0; i < feedZ.length; i++) feedZ[i] *= latentScale;
      const r = await G.trainStep({ [AE_IO.latent]: tensor('float32', [batch, C, h, w], feedZ), target: tensor('float32', [batch, 1, H, W], feedT) });
      return { loss: r.loss, ms: G.lastStepMs };
    },
    validate: async () => {
      validated = await scoreNow();
      const { sc } = validated;
      return { scores: sc.scores, grid: sc.grid };
    },
    exportBest: async (rec) => {
      // The loop exports right after the validation that found the improvement: reuse its scores.
      const { tensors, sc } = validated?.step === rec.step ? validated : await scoreNow();
      lastManifest = writeAutoencoder(
        o.out,
        {
          space: 'features',
          profile,
          image: { height: FEATURE_INPUT.height, width: FEATURE_INPUT.width },
          latent: [C, h, w],
          latentScale,
          architecture: { network: 'mobilenet_v2 (nsfwjs)', layer, decoder: cfg, output: { height: H, width: W } },
          images: { ...images.provenance, datasets: sources.map((s) => s.ds.dir) },
          heldOut: { dataset: sources[0].ds.dir, count: heldCount, reconstruction: sc.scores, meanImage: meanImageScores(images, sources[0], heldCount) },
          training: { step: rec.step, seconds: rec.seconds, config },
        },
        featureModel([layer], FEATURE_INPUT),
        decoderGraph(cfg, [C, h, w], tensors, latentScale),
      );
      writeFile(join(o.out, 'reconstructions.png'), reconstructionGrid(sc.grid.rows, sc.grid.count, sc.grid.height, sc.grid.width));
    },
    saveCheckpoint: (dir) => G.saveCheckpoint(join(dir, 'feature_decoder')),
    loadCheckpoint: (dir) => void G.loadCheckpoint(join(dir, 'feature_decoder')),
  };
  const { manifest, history, best } = await runAutoencoderRecipe(recipe, o, { run: o.run ?? join(o.out, 'run'), shuffleSeed: (e) => seed * 19 + e, startedAt: t0, label: 'feature decoder', log, written: () => lastManifest });
  return { manifest, history, best, seconds: (Date.now() - t0) / 1000 };
}

/** Binary cross-entropy of sigmoid(logits) against targets in [0, 1], mean over pixels (the report's decoder loss). */
function bceWithLogits(ctx: LayerContext, logits: Value, target: Value): Value {
  const { g } = ctx;
  const p = sigmoid(ctx, logits);
  const eps = scalar(g, 'eps', 1e-6);
  const one = scalar(g, 'one', 1);
  const pos = g.op('Mul', [target, g.op('Log', [g.op('Add', [p, eps])])]);
  const neg = g.op('Mul', [g.op('Sub', [one, target]), g.op('Log', [g.op('Add', [g.op('Sub', [one, p]), eps])])]);
  return g.op('Neg', [reduce(ctx, 'ReduceMean', g.op('Add', [pos, neg]), [0, 1, 2, 3], false)]);
}

/**
 * The eval-mode decoder, feature map (as the network outputs it) -> grey image in [0, 1], with the
 * trained tensors. The decoder itself was trained on latentScale * features, as readins predict them.
 */
function decoderGraph(cfg: FeatureDecoderConfig, latent: [number, number, number], tensors: Map<string, TensorData>, latentScale: number): Graph {
  const g = newGraph('feature_decoder');
  const ctx: LayerContext = { g, rng: new Rng(0), mode: 'eval' };
  const z = g.input(AE_IO.latent, 'float32', ['batch', ...latent]);
  g.output(sigmoid(ctx, featureDecoder(ctx, g.op('Mul', [z, scalar(g, 'latent_scale', latentScale)]), cfg)), AE_IO.image);
  for (const [k] of g.initializers) {
    const t = tensors.get(k);
    if (t) g.setInitializer(k, t);
  }
  return g;
}

/** The layer a run being resumed chose (its run config), so --resume does not redo the layer table. */
function previousLayer(out: string): string | undefined {
  const file = join(out, 'run', 'config.json');
  if (!existsSync(file)) return undefined;
  const layer = (JSON.parse(readFileSync(file, 'utf8')) as { layer?: unknown }).layer;
  return typeof layer === 'string' ? layer : undefined;
}

/** 1 / std of all feature values: readins regress unit-variance targets. */
function scaleOf(x: Float32Array): number {
  let sum = 0;
  let sq = 0;
  for (const v of x) {
    sum += v;
    sq += v * v;
  }
  const m = sum / x.length;
  return 1 / Math.sqrt(Math.max(1e-12, sq / x.length - m * m));
}
