import { mkdirSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ccError } from '../../common/errors.js';
import { progress } from '../../common/progress.js';
import { Rng } from '../../models/rng.js';
import { writeNpy } from '../../common/npy.js';
import { cropPhoto, loadPhoto, PHOTOS, type CropSpec, type GreyPhoto, type PhotoName } from './photos.js';
import { resizeArea } from '../../datasets/image-ops.js';
import { DEFAULT_SIMULATOR, NEURON_PARAM_KEYS, poisson, stimulusContrast, V1Model, type SimulatorConfig } from './simulator.js';

type Tier = 'train' | 'validation' | 'test';

export const IMAGE_H = 144;
export const IMAGE_W = 256;

export interface SynthConfig {
  trainTrials: number;
  validationTrials: number;
  testImages: number;
  /** Each test image is shown this many times (trial-averaged for evaluation). */
  repeats: number;
  /** Photos reserved for validation and test crops; every other photo feeds train crops. */
  validationPhotos: PhotoName[];
  testPhotos: PhotoName[];
  /** Crop width as a fraction of the largest 16:9 crop the photo allows ('regions': the region allows). */
  cropScale: [number, number];
  /**
   * How stimuli are kept apart between tiers. 'photos': validation and test crops come from their own
   * photos (`validationPhotos`, `testPhotos`), train crops from the rest. 'regions': every photo feeds
   * every tier; each photo is cut into quadrants separated by a guard band (no shared pixels), one
   * quadrant for test, the opposite one for validation, two for train (see `regionPlan`). Default
   * 'photos' (datasets written before 'regions' existed are 'photos').
   */
  split?: 'photos' | 'regions';
  /**
   * Responses without trial-to-trial noise: each neuron's expected response (the mean of the Poisson
   * x amplitude x log-normal draw) instead of a draw, at rest (no running modulation). For measuring
   * the ceiling of what is decodable.
   */
  noiseFree?: boolean;
  simulator: SimulatorConfig;
}

/** Pixels between the quadrants of a photo in the 'regions' split, so no two tiers share a pixel. */
export const REGION_GUARD_PX = 16;
/** 'regions' crop sizes: 40-100% of a quadrant's largest 16:9 crop (about 20-50% of the photo's). */
export const REGION_CROP_SCALE: [number, number] = [0.4, 1];

interface Rect {
  left: number;
  top: number;
  width: number;
  height: number;
}

/**
 * The quadrants of a photo for the 'regions' split: photo i (in PHOTOS order) keeps quadrant i mod 4
 * for test and the opposite quadrant for validation, so over the nine photos every quadrant position
 * is held out; the guard band around the centre lines belongs to no tier.
 */
export function regionPlan(photo: { width: number; height: number }, photoIndex: number): Record<Tier, Rect[]> {
  const g = REGION_GUARD_PX / 2;
  const cx = Math.floor(photo.width / 2);
  const cy = Math.floor(photo.height / 2);
  const quadrants: Rect[] = [
    { left: 0, top: 0, width: cx - g, height: cy - g },
    { left: cx + g, top: 0, width: photo.width - cx - g, height: cy - g },
    { left: cx + g, top: cy + g, width: photo.width - cx - g, height: photo.height - cy - g },
    { left: 0, top: cy + g, width: cx - g, height: photo.height - cy - g },
  ];
  const test = photoIndex % 4;
  const validation = (test + 2) % 4;
  return { test: [quadrants[test]], validation: [quadrants[validation]], train: quadrants.filter((_, q) => q !== test && q !== validation) };
}

/** A random 16:9 crop inside `r`, `scale` of the largest one r allows wide (mirrored half the time). */
export function planCropIn(rng: Rng, r: Rect, scale: [number, number]): CropSpec {
  const aspect = IMAGE_W / IMAGE_H;
  const maxW = Math.min(r.width, Math.floor(r.height * aspect));
  const width = Math.min(maxW, Math.max(IMAGE_W / 4, Math.round(maxW * rng.uniform(scale[0], scale[1]))));
  const height = Math.min(r.height, Math.round(width / aspect));
  return { left: r.left + rng.int(r.width - width + 1), top: r.top + rng.int(r.height - height + 1), width, height, flip: rng.next() < 0.5 };
}

export const SYNTH_PRESETS: Record<'default' | 'small' | 'tiny', SynthConfig> = {
  default: {
    trainTrials: 4500,
    validationTrials: 500,
    testImages: 40,
    repeats: 10,
    validationPhotos: ['french-alpine-landscape'],
    testPhotos: ['nagasaki-boats'],
    cropScale: [0.2, 0.75],
    simulator: DEFAULT_SIMULATOR,
  },
  small: {
    trainTrials: 1500,
    validationTrials: 150,
    testImages: 20,
    repeats: 5,
    validationPhotos: ['french-alpine-landscape'],
    testPhotos: ['nagasaki-boats'],
    cropScale: [0.2, 0.75],
    simulator: { ...DEFAULT_SIMULATOR, neurons: 2000 },
  },
  /** For unit tests: seconds to generate. */
  tiny: {
    trainTrials: 240,
    validationTrials: 40,
    testImages: 8,
    repeats: 3,
    validationPhotos: ['french-alpine-landscape'],
    testPhotos: ['nagasaki-boats'],
    cropScale: [0.2, 0.75],
    simulator: { ...DEFAULT_SIMULATOR, neurons: 300 },
  },
};

interface TrialPlan {
  tier: Tier;
  imageId: number;
  photo: PhotoName;
  crop: CropSpec;
}

/** A random 16:9 crop of `photo`, `scale` of the largest one wide (mirrored half the time): the stimuli's geometry. */
export function planCrop(rng: Rng, photo: GreyPhoto, scale: [number, number]): CropSpec {
  const aspect = IMAGE_W / IMAGE_H;
  const maxW = Math.min(photo.width, Math.floor(photo.height * aspect));
  const width = Math.max(IMAGE_W / 4, Math.round(maxW * rng.uniform(scale[0], scale[1])));
  const height = Math.round(width / aspect);
  return { left: rng.int(photo.width - width + 1), top: rng.int(photo.height - height + 1), width, height, flip: rng.next() < 0.5 };
}

export interface SynthResult {
  dir: string;
  trials: number;
  neurons: number;
  seconds: number;
}

/**
 * Write a complete simulated recording in the SENSORIUM 2022 layout, so the real loader is what every
 * test and demo reads. Trials of all tiers are interleaved in a shuffled session order.
 */
// Over 80 lines: the dataset writer walks the SENSORIUM layout file by file, in the order a reader checks it.
export async function synthesize(dir: string, cfg: SynthConfig, opts: { quiet?: boolean; force?: boolean } = {}): Promise<SynthResult> {
  const t0 = Date.now();
  if (existsSync(dir) && readdirSync(dir).length && !opts.force) throw ccError('CC_ERR_DATASET_MISSING', dir, 'output folder exists and is not empty (use --force to overwrite)');
  const sim = cfg.simulator;
  const rng = new Rng(sim.seed);
  const photos = new Map<PhotoName, GreyPhoto>();
  for (const name of PHOTOS) photos.set(name, await loadPhoto(name));
  const reserved = new Set(cfg.split === 'regions' ? [] : [...cfg.validationPhotos, ...cfg.testPhotos]);
  const split: Record<Tier, PhotoName[]> = {
    train: PHOTOS.filter((p) => !reserved.has(p)),
    validation: cfg.split === 'regions' ? [...PHOTOS] : cfg.validationPhotos,
    test: cfg.split === 'regions' ? [...PHOTOS] : cfg.testPhotos,
  };
  if (cfg.split !== 'regions' && cfg.validationPhotos.some((p) => cfg.testPhotos.includes(p))) throw ccError('CC_ERR_OPTION', 'a photo cannot feed both validation and test');

  // Plan every trial: which photo and crop, which tier, which image id (repeats share one).
  const plans: TrialPlan[] = [];
  let imageId = 0;
  const addImages = (tier: Tier, count: number, repeats: number): void => {
    for (let i = 0; i < count; i++) {
      const photo = split[tier][rng.int(split[tier].length)];
      const crop = planCrop(rng, photos.get(photo)!, cfg.cropScale);
      const id = imageId++;
      for (let r = 0; r < repeats; r++) plans.push({ tier, imageId: id, photo, crop });
    }
  };
  if (cfg.split === 'regions') plans.push(...regionTrials(cfg, photos, sim.seed));
  else {
    addImages('train', cfg.trainTrials, 1);
    addImages('validation', cfg.validationTrials, 1);
    addImages('test', cfg.testImages, cfg.repeats);
  }
  // The rate scales are calibrated on the first planned trials: with 'regions' those are the same train
  // crops whatever the number of trials, so datasets of one seed with 5x the trials simulate the same population.
  const calibration = plans.slice(0, 64);
  rng.shuffle(plans);
  const nTrials = plans.length;
  const n = sim.neurons;

  for (const sub of ['data/images', 'data/responses', 'data/behavior', 'data/pupil_center', 'meta/trials', 'meta/neurons', 'meta/simulation']) mkdirSync(join(dir, sub), { recursive: true });

  const model = await V1Model.create(sim);
  const P = sim.height * sim.width;
  const noiseRng = new Rng(sim.seed * 31 + 5);
  const amplitude = Float32Array.from({ length: n }, () => noiseRng.uniform(0.3, 2));

  // Behaviour: slow random walks for pupil and running, in session order.
  const behavior = new Float32Array(nTrials * 3);
  const pupilCenter = new Float32Array(nTrials * 2);
  let pupil = 20;
  let run = 0;
  for (let t = 0; t < nTrials; t++) {
    const prev = pupil;
    pupil = Math.min(40, Math.max(8, pupil + noiseRng.normal() * 1.5));
    run = Math.max(0, 0.9 * run + noiseRng.normal() * 2 + (noiseRng.next() < 0.02 ? 15 : 0));
    behavior.set([pupil, pupil - prev, run], t * 3);
    pupilCenter.set([noiseRng.normal() * 3, noiseRng.normal() * 2], t * 2);
  }

  const responses = new Float32Array(nTrials * n);
  const bar = progress('synth', nTrials, { quiet: opts.quiet });
  const batch = 64;
  const pixelHist = new Float64Array(256);
  let calibrated = false;
  for (let b0 = 0; b0 < nTrials; b0 += batch) {
    const idx = plans.slice(b0, b0 + batch);
    const crops = await Promise.all(idx.map((p) => cropPhoto(photos.get(p.photo)!, p.crop, IMAGE_W, IMAGE_H)));
    const stim = new Float32Array(idx.length * P);
    crops.forEach((c, i) => {
      for (let k = 0; k < c.length; k++) pixelHist[c[k]]++;
      stimulusContrast(resizeArea(c, IMAGE_H, IMAGE_W, sim.height, sim.width), stim.subarray(i * P, (i + 1) * P));
      writeNpy(join(dir, 'data/images', `${b0 + i}.npy`), c, [1, IMAGE_H, IMAGE_W]);
    });
    const drive = await model.drive(stim, idx.length);
    if (!calibrated) {
      // Rates are calibrated once (any tier: it only sets scales): on the first batch of the session, or
      // with 'regions' on the first planned trials (see above).
      if (cfg.split === 'regions') model.calibrate(await model.drive(await contrastStimuli(calibration, photos, sim.height, sim.width), calibration.length), calibration.length);
      else model.calibrate(drive, idx.length);
      calibrated = true;
    }
    const mu = new Float32Array(n);
    for (let i = 0; i < idx.length; i++) {
      const t = b0 + i;
      // Noise-free: no running modulation either (it varies from trial to trial whatever the stimulus).
      model.expected(drive.subarray(i * n, (i + 1) * n), cfg.noiseFree ? 0 : behavior[t * 3 + 2], mu);
      const r = responses.subarray(t * n, (t + 1) * n);
      for (let k = 0; k < n; k++) {
        if (cfg.noiseFree) {
          // The draw's expectation: E[events] = mu, E[exp(0.25 z)] = exp(0.25^2 / 2).
          r[k] = amplitude[k] * mu[k] * NOISE_FREE_JITTER;
          continue;
        }
        const events = poisson(noiseRng, mu[k]);
        r[k] = events ? amplitude[k] * events * Math.exp(0.25 * noiseRng.normal()) : 0;
      }
      writeNpy(join(dir, 'data/responses', `${t}.npy`), r, [n]);
      writeNpy(join(dir, 'data/behavior', `${t}.npy`), behavior.subarray(t * 3, t * 3 + 3), [3]);
      writeNpy(join(dir, 'data/pupil_center', `${t}.npy`), pupilCenter.subarray(t * 2, t * 2 + 2), [2]);
    }
    bar.tick(idx.length);
  }
  bar.stop();

  writeNpy(join(dir, 'meta/trials/tiers.npy'), plans.map((p) => p.tier));
  writeNpy(join(dir, 'meta/trials/frame_image_id.npy'), BigInt64Array.from(plans.map((p) => BigInt(p.imageId))));
  writeNpy(join(dir, 'meta/trials/stimulus_source.npy'), plans.map((p) => p.photo));
  writeNpy(join(dir, 'meta/trials/trial_idx.npy'), BigInt64Array.from(plans.map((_, i) => BigInt(i))));
  writeNpy(join(dir, 'meta/neurons/unit_ids.npy'), BigInt64Array.from({ length: n }, (_, i) => BigInt(i + 1)));
  writeNpy(join(dir, 'meta/neurons/cell_motor_coordinates.npy'), model.params.cortex, [n, 3]);
  writeNpy(join(dir, 'meta/neurons/area.npy'), Array(n).fill('V1'));
  writeNpy(join(dir, 'meta/neurons/layer.npy'), Array(n).fill('L2/3'));
  writeStatistics(dir, { pixelHist, responses, behavior, pupilCenter, nTrials, n });

  for (const key of NEURON_PARAM_KEYS) writeNpy(join(dir, 'meta/simulation', `${key}.npy`), model.params[key]);
  writeNpy(join(dir, 'meta/simulation/amplitude.npy'), amplitude);
  writeFileSync(
    join(dir, 'meta/simulation/params.json'),
    JSON.stringify(
      {
        generator: 'cortexcast synth',
        description:
          'Simulated V1: Gabor receptive fields (simple = rectified, complex = quadrature energy), divisive normalisation by the mean population energy, per-neuron scale/baseline, running gain, Poisson events x per-neuron amplitude x log-normal jitter.',
        config: cfg,
        photoSplit: split,
        trials: plans.map((p) => ({ tier: p.tier, imageId: p.imageId, photo: p.photo, crop: p.crop })),
      },
      null,
      1,
    ),
  );
  return { dir, trials: nTrials, neurons: n, seconds: (Date.now() - t0) / 1000 };
}

const NOISE_FREE_JITTER = Math.exp(0.25 ** 2 / 2);

/**
 * The 'regions' plan: each tier from its quadrants of every photo. Validation and test images cycle
 * through the photos (each photo holds out the same share); train images pick photos at random. Each
 * tier draws from its own random stream, so a dataset with more train trials keeps the same
 * validation and test images.
 */
function regionTrials(cfg: SynthConfig, photos: Map<PhotoName, GreyPhoto>, seed: number): TrialPlan[] {
  const plans: TrialPlan[] = [];
  let imageId = 0;
  const tiers: [Tier, number, number][] = [
    ['train', cfg.trainTrials, 1],
    ['validation', cfg.validationTrials, 1],
    ['test', cfg.testImages, cfg.repeats],
  ];
  tiers.forEach(([tier, count, repeats], t) => {
    const rng = new Rng(seed * 7919 + 101 * (t + 1));
    // Image ids: train from 0, validation and test in ranges of their own, so ids stay put as train grows.
    imageId = tier === 'train' ? 0 : tier === 'validation' ? 1_000_000 : 2_000_000;
    for (let i = 0; i < count; i++) {
      const p = tier === 'train' ? rng.int(PHOTOS.length) : i % PHOTOS.length;
      const photo = photos.get(PHOTOS[p])!;
      const rects = regionPlan(photo, p)[tier];
      const crop = planCropIn(rng, rects[rng.int(rects.length)], REGION_CROP_SCALE);
      const id = imageId++;
      for (let r = 0; r < repeats; r++) plans.push({ tier, imageId: id, photo: PHOTOS[p], crop });
    }
  });
  return plans;
}

/** The simulator's input for planned trials: crops at the dataset geometry, resized, as contrast. */
async function contrastStimuli(plans: TrialPlan[], photos: Map<PhotoName, GreyPhoto>, h: number, w: number): Promise<Float32Array> {
  const out = new Float32Array(plans.length * h * w);
  const crops = await Promise.all(plans.map((p) => cropPhoto(photos.get(p.photo)!, p.crop, IMAGE_W, IMAGE_H)));
  crops.forEach((c, i) => stimulusContrast(resizeArea(c, IMAGE_H, IMAGE_W, h, w), out.subarray(i * h * w, (i + 1) * h * w)));
  return out;
}

interface StatsInput {
  pixelHist: Float64Array;
  responses: Float32Array;
  behavior: Float32Array;
  pupilCenter: Float32Array;
  nTrials: number;
  n: number;
}

/** meta/statistics/<key>/all/{mean,std,median,min,max}.npy over all trials, as SENSORIUM ships. */
function writeStatistics(dir: string, s: StatsInput): void {
  const write = (key: string, st: Record<string, Float32Array>, shape: number[]): void => {
    const d = join(dir, 'meta/statistics', key, 'all');
    mkdirSync(d, { recursive: true });
    for (const [k, v] of Object.entries(st)) writeNpy(join(d, `${k}.npy`), v, shape);
  };
  // Images: scalar statistics from the grey-level histogram (exact median).
  let total = 0;
  let sum = 0;
  let sq = 0;
  let lo = 255;
  let hi = 0;
  s.pixelHist.forEach((c, v) => {
    total += c;
    sum += c * v;
    sq += c * v * v;
    if (c) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
  });
  let acc = 0;
  let median = 0;
  for (let v = 0; v < 256; v++) {
    acc += s.pixelHist[v];
    if (acc >= total / 2) {
      median = v;
      break;
    }
  }
  const mean = sum / total;
  write('images', { mean: f([mean]), std: f([Math.sqrt(sq / total - mean * mean)]), median: f([median]), min: f([lo]), max: f([hi]) }, []);
  write('responses', columnStats(s.responses, s.nTrials, s.n), [s.n]);
  write('behavior', columnStats(s.behavior, s.nTrials, 3), [3]);
  write('pupil_center', columnStats(s.pupilCenter, s.nTrials, 2), [2]);
}

const f = (v: number[]): Float32Array => Float32Array.from(v);

function columnStats(m: Float32Array, rows: number, cols: number): Record<string, Float32Array> {
  const out = { mean: new Float32Array(cols), std: new Float32Array(cols), median: new Float32Array(cols), min: new Float32Array(cols), max: new Float32Array(cols) };
  const col = new Float32Array(rows);
  for (let c = 0; c < cols; c++) {
    let sum = 0;
    let sq = 0;
    for (let r = 0; r < rows; r++) {
      const v = m[r * cols + c];
      col[r] = v;
      sum += v;
      sq += v * v;
    }
    col.sort();
    const mean = sum / rows;
    out.mean[c] = mean;
    out.std[c] = Math.sqrt(Math.max(0, sq / rows - mean * mean));
    out.median[c] = rows % 2 ? col[(rows - 1) / 2] : (col[rows / 2 - 1] + col[rows / 2]) / 2;
    out.min[c] = col[0];
    out.max[c] = col[rows - 1];
  }
  return out;
}
