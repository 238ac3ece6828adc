import { mkdirSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ccError } from '../../common/errors.js';
import { progress } from '../../common/progress.js';
import { Rng } from '../../models/rng.js';
import { writeNpy } from '../../common/npy.js';
import { cropPhoto, loadPhoto, PHOTOS, type CropSpec, type GreyPhoto, type PhotoName } from './photos.js';
import { resizeArea } from '../../datasets/image-ops.js';
import { DEFAULT_SIMULATOR, NEURON_PARAM_KEYS, poisson, stimulusContrast, V1Model, type SimulatorConfig } from './simulator.js';

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
  /** Crop width as a fraction of the largest 16:9 crop the photo allows. */
  cropScale: [number, number];
  simulator: SimulatorConfig;
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

type Tier = 'train' | 'validation' | 'test';
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
  const reserved = new Set([...cfg.validationPhotos, ...cfg.testPhotos]);
  const split: Record<Tier, PhotoName[]> = {
    train: PHOTOS.filter((p) => !reserved.has(p)),
    validation: cfg.validationPhotos,
    test: cfg.testPhotos,
  };
  if (cfg.validationPhotos.some((p) => cfg.testPhotos.includes(p))) throw ccError('CC_ERR_OPTION', 'a photo cannot feed both validation and test');

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
  addImages('train', cfg.trainTrials, 1);
  addImages('validation', cfg.validationTrials, 1);
  addImages('test', cfg.testImages, cfg.repeats);
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
      // Rates are calibrated on the first batch of the session (any tier: it only sets scales).
      model.calibrate(drive, idx.length);
      calibrated = true;
    }
    const mu = new Float32Array(n);
    for (let i = 0; i < idx.length; i++) {
      const t = b0 + i;
      model.expected(drive.subarray(i * n, (i + 1) * n), behavior[t * 3 + 2], mu);
      const r = responses.subarray(t * n, (t + 1) * n);
      for (let k = 0; k < n; k++) {
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
