import ort from 'onnxruntime-node';
import { ccError } from '../../common/errors.js';
import { applyResponseTransform, assertDecoder, loadBundle, type DecoderBundle } from '../../models/bundle.js';
import { DecoderRunner } from '../../models/decoder-runner.js';
import { createSession } from '../../models/ort.js';
import { readRawSplit } from '../../datasets/preprocess.js';
import { SensoriumDataset } from '../../datasets/sensorium.js';
import { openDataset } from '../../datasets/dataset-source.js';
import { FidComputer } from './metrics/fid.js';
import type { FidFeatures } from './metrics/inception.js';
import { identificationAccuracy } from './metrics/identification.js';
import { scoreImages, type ImageScores } from './metrics/image-metrics.js';
import { scoresBySource, stimulusSources, type SourceScores } from './stimulus-sources.js';

export interface EvalMetrics extends ImageScores {
  fid?: number;
  /** Two-way identification accuracy (chance 0.5; see metrics/identification.ts), low- and high-level InceptionV3 features. */
  identLow?: number;
  identHigh?: number;
  images: number;
}

export interface EvalResult {
  bundle: DecoderBundle;
  tier: string;
  metrics: EvalMetrics;
  /** Scores per stimulus source (the source photo, for simulated data); absent when the dataset records none. */
  bySource?: SourceScores[];
  /** [count, h*w] ground-truth images (resized grey levels) and reconstructions (z-scored pixels). */
  targets: Float32Array;
  recon: Float32Array;
  count: number;
  h: number;
  w: number;
}

/** Decode raw response rows with a bundle, exactly as the server does (same transform, same runner). */
export async function decodeRows(session: ort.InferenceSession, b: DecoderBundle, raw: Float32Array, rows: number, batch = 64): Promise<Float32Array> {
  const n = b.manifest.input.neurons;
  const P = b.manifest.output.height * b.manifest.output.width;
  const runner = new DecoderRunner(session, b.manifest);
  // Iterative decoders repeat the step many times: small batches stay in cache (measured on the
  // default encoder: a step costs 26 ms for 1 image, 170 ms for 8, 1,470 ms for 24).
  if (runner.iterative) batch = Math.min(batch, 8);
  const out = new Float32Array(rows * P);
  for (let r0 = 0; r0 < rows; r0 += batch) {
    const nb = Math.min(batch, rows - r0);
    const x = applyResponseTransform(raw.subarray(r0 * n, (r0 + nb) * n), b.stdScale, b.manifest.input.transform);
    out.set(await runner.run(x, nb), r0 * P);
  }
  return out;
}

/**
 * The dataset columns a bundle reads: undefined when it takes the dataset's neurons as they are;
 * the columns of its unit ids when it was trained on a subset of them (a neuron-subset decoder).
 */
function bundleColumns(ds: SensoriumDataset, bundle: DecoderBundle): number[] | undefined {
  const m = bundle.manifest;
  if (ds.neurons === m.input.neurons) {
    if (ds.unitIds.some((u, i) => u !== bundle.unitIds[i]))
      throw ccError('CC_ERR_DATASET_SHAPE', ds.dir, `unit ids differ from bundle ${m.name}'s (a different session or neuron order)`);
    return undefined;
  }
  const column = new Map(ds.unitIds.map((u, i) => [u, i]));
  const columns = bundle.unitIds.map((u) => column.get(u));
  if (m.input.neurons > ds.neurons || columns.some((c) => c === undefined)) throw ccError('CC_ERR_NEURON_COUNT', ds.neurons, m.name, m.input.neurons);
  return columns as number[];
}

/**
 * The report's Table I evaluation of one bundle on one tier (test by default, repeats averaged):
 * SSIML, MSE and FID, plus SSIM, PixCorr, two-way identification and the scores per stimulus source.
 */
export async function evaluateBundle(bundleDir: string, dataDir: string, opts: { tier?: string; fid?: FidFeatures | 0; singleTrials?: boolean; identification?: boolean } = {}): Promise<EvalResult> {
  const bundle = loadBundle(bundleDir);
  assertDecoder(bundle.manifest, bundle.dir);
  const ds = openDataset(dataDir);
  const m = bundle.manifest;
  const neurons = bundleColumns(ds, bundle);
  const tier = opts.tier ?? 'test';
  const h = m.output.height;
  const w = m.output.width;
  // singleTrials: every test repeat decoded on its own, as the server sees frames (the report averages them first).
  const split = readRawSplit(ds, tier, { average: tier === 'test' && !opts.singleTrials, imageSize: [h, w], neurons });
  const count = split.imageIds.length;
  if (count === 0) throw ccError('CC_ERR_DATASET_SHAPE', dataDir, `tier '${tier}' has no trials`);
  const { session } = await createSession(bundle.model);
  const recon = await decodeRows(session, bundle, split.responses, count);
  const scores = scoreImages(split.images, recon, count, h, w);
  const metrics: EvalMetrics = { ssim: scores.ssim, ssiml: scores.ssiml, mse: scores.mse, pixcorr: scores.pixcorr, images: count };
  const fidFeatures = opts.fid ?? 64;
  if (fidFeatures && count >= 2) metrics.fid = await (await FidComputer.create(fidFeatures)).fid(split.images, recon, count, h, w);
  // Identification runs the whole InceptionV3 (seconds per 40 images on a CPU): on wherever FID is.
  if ((opts.identification ?? fidFeatures !== 0) && count >= 2) {
    const id = await identificationAccuracy(split.images, recon, count, h, w);
    metrics.identLow = id.low;
    metrics.identHigh = id.high;
  }
  const sources = stimulusSources(dataDir);
  const bySource = sources && scoresBySource(sources, split.imageIds, split.images, recon, h, w);
  return { bundle, tier, metrics, bySource, targets: split.images, recon, count, h, w };
}
