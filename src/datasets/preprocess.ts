import { ccError } from '../common/errors.js';
import { progress } from '../common/progress.js';
import { columnMeanStd } from '../common/stats.js';
import { applyResponseTransform, responseScaleVector, type ResponseScaling } from '../common/scaling.js';
import { resizeArea } from './image-ops.js';
import type { SensoriumDataset } from './sensorium.js';
import type { RecordedResponseWindow } from './trials.js';

export interface PreprocessConfig {
  /** Decoder image size [height, width]: [36, 64] (factor 0.25, the report's) or [64, 64]. */
  imageSize: [number, number];
  responseScaling: ResponseScaling;
}

export const DEFAULT_PREPROCESS: PreprocessConfig = { imageSize: [36, 64], responseScaling: 'brainreader' };

/** One tier, ready for training: images z-scored, responses std-scaled, repeats averaged for test. */
export interface PreparedSplit {
  tier: string;
  count: number;
  /** [count, H*W] z-scored pixels. */
  images: Float32Array;
  /** [count, neurons] std-scaled responses. */
  responses: Float32Array;
  imageIds: number[];
  /** Trials behind each row (several where repeats were averaged). */
  trials: number[][];
}

export interface Preprocessing {
  config: PreprocessConfig;
  imageMean: number;
  imageStd: number;
  /** Per-neuron multiplier: scaled = raw * responseScale. */
  responseScale: Float32Array;
  /** Train-tier per-neuron std of raw responses (for reports). */
  responseStd: Float32Array;
}

export interface PreparedData {
  prep: Preprocessing;
  /** The dataset's response window where its trials were cut from continuous traces (bundles record it). */
  responseWindow?: RecordedResponseWindow;
  neurons: number;
  unitIds: number[];
  height: number;
  width: number;
  train: PreparedSplit;
  validation: PreparedSplit;
  test: PreparedSplit;
}

/** A tier as stored: images resized but not normalised, responses raw (repeats averaged if asked). */
export interface RawSplit {
  tier: string;
  images: Float32Array;
  responses: Float32Array;
  imageIds: number[];
  trials: number[][];
}

/**
 * Read the dataset once, trial by trial, into preallocated matrices (no second copy of the set):
 * resize images, take statistics from the train tier only, then normalise every tier in place.
 * Test trials that repeat an image are averaged, as the report evaluates them.
 */
export function prepareDataset(ds: SensoriumDataset, cfg: PreprocessConfig = DEFAULT_PREPROCESS, opts: { quiet?: boolean; maxTrain?: number; neurons?: readonly number[] } = {}): PreparedData {
  const [H, W] = cfg.imageSize;
  const columns = opts.neurons && checkedNeuronSubset(ds, opts.neurons);
  const n = columns ? columns.length : ds.neurons;
  const bar = progress('load', ds.trialCount, { quiet: opts.quiet });
  const tick = (): void => bar.tick();
  const readSplit = (tier: string, average: boolean, limit?: number): RawSplit => readRawSplit(ds, tier, { average, imageSize: cfg.imageSize, limit, neurons: columns, onTrial: tick });
  const train = readSplit('train', false, opts.maxTrain);
  const validation = readSplit('validation', false);
  const test = readSplit('test', true);
  bar.stop();
  if (train.imageIds.length < 2) throw ccError('CC_ERR_DATASET_SHAPE', ds.dir, `needs at least 2 train trials, has ${train.imageIds.length}`);
  for (const s of [train.responses, validation.responses, test.responses]) {
    const bad = s.findIndex((v) => !Number.isFinite(v));
    if (bad >= 0) throw ccError('CC_ERR_DATASET_SHAPE', ds.dir, `responses hold a non-finite value (neuron ${bad % n})`);
  }

  // Train-tier statistics.
  let sum = 0;
  let sq = 0;
  for (const v of train.images) {
    sum += v;
    sq += v * v;
  }
  const imageMean = sum / train.images.length;
  const imageStd = Math.sqrt(Math.max(1e-12, sq / train.images.length - imageMean * imageMean));
  const { std: responseStd } = columnMeanStd(train.responses, train.imageIds.length, n);
  const responseScale = responseScaleVector(responseStd, cfg.responseScaling);
  const finish = (s: RawSplit): PreparedSplit => {
    for (let i = 0; i < s.images.length; i++) s.images[i] = (s.images[i] - imageMean) / imageStd;
    applyResponseTransform(s.responses, responseScale, 'none', s.responses);
    return { tier: s.tier, count: s.imageIds.length, images: s.images, responses: s.responses, imageIds: s.imageIds, trials: s.trials };
  };
  return {
    prep: { config: cfg, imageMean, imageStd, responseScale, responseStd },
    ...(ds.responseWindow ? { responseWindow: ds.responseWindow } : {}),
    neurons: n,
    unitIds: columns ? columns.map((i) => ds.unitIds[i]) : ds.unitIds,
    height: H,
    width: W,
    train: finish(train),
    validation: finish(validation),
    test: finish(test),
  };
}

/**
 * A neuron subset as dataset column indices, checked once: integers in range, no repeats, at least
 * one. The order given is the order of the prepared responses (and of a bundle's unit ids).
 */
export function checkedNeuronSubset(ds: SensoriumDataset, neurons: readonly number[]): number[] {
  if (!neurons.length) throw ccError('CC_ERR_OPTION', 'the neuron subset is empty');
  const bad = neurons.find((i) => !Number.isInteger(i) || i < 0 || i >= ds.neurons);
  if (bad !== undefined) throw ccError('CC_ERR_OPTION', `neuron index ${bad} is outside 0..${ds.neurons - 1} (dataset ${ds.dir})`);
  if (new Set(neurons).size !== neurons.length) throw ccError('CC_ERR_OPTION', 'the neuron subset lists a neuron twice');
  return [...neurons];
}

/**
 * Read one tier trial by trial into preallocated matrices (resized images, raw responses). With
 * `neurons` (dataset column indices, see checkedNeuronSubset) only those responses are kept, in that order.
 */
export function readRawSplit(
  ds: SensoriumDataset,
  tier: string,
  o: { average: boolean; imageSize: [number, number]; limit?: number; neurons?: readonly number[]; onTrial?: () => void },
): RawSplit {
  const [H, W] = o.imageSize;
  const P = H * W;
  const columns = o.neurons;
  const n = columns ? columns.length : ds.neurons;
  const [sh, sw] = ds.imageShape;
  let idx = ds.indices(tier);
  if (o.limit !== undefined) idx = idx.slice(0, o.limit);
  const groups: number[][] = [];
  if (o.average) {
    const byImage = new Map<number, number[]>();
    for (const i of idx) {
      const id = ds.imageIds[i];
      if (!byImage.has(id)) byImage.set(id, []);
      byImage.get(id)!.push(i);
    }
    groups.push(...byImage.values());
  } else for (const i of idx) groups.push([i]);
  const images = new Float32Array(groups.length * P);
  const responses = new Float32Array(groups.length * n);
  groups.forEach((g, row) => {
    const r = responses.subarray(row * n, (row + 1) * n);
    g.forEach((i, k) => {
      const t = ds.trial(i);
      if (k === 0) resizeArea(t.image, sh, sw, H, W, images.subarray(row * P, (row + 1) * P));
      if (columns) for (let j = 0; j < n; j++) r[j] += t.responses[columns[j]] / g.length;
      else for (let j = 0; j < n; j++) r[j] += t.responses[j] / g.length;
      o.onTrial?.();
    });
  });
  return { tier, images, responses, imageIds: groups.map((g) => ds.imageIds[g[0]]), trials: groups };
}
