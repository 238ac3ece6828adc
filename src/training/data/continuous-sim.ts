import { existsSync } from 'node:fs';
import { ccError } from '../../common/errors.js';
import { progress } from '../../common/progress.js';
import { resizeArea } from '../../datasets/image-ops.js';
import { NwbWriter } from '../../datasets/nwb-write.js';
import { Rng } from '../../models/rng.js';
import { cropPhoto, loadPhoto, PHOTOS, type CropSpec, type GreyPhoto, type PhotoName } from './photos.js';
import { stimulusContrast, V1Model } from './simulator.js';
import { IMAGE_H, IMAGE_W, planCrop, type SynthConfig } from './synth.js';

/**
 * The simulated V1 as a two-photon session: stimuli on for `stimulusSeconds`, grey for a random
 * `greySeconds` between them, events drawn frame by frame from the simulator's rates (the
 * stimulus' while it is on, the grey screen's otherwise), each event a calcium transient (exponential
 * rise and decay), plus per-frame noise and a slow drift per ROI. Written as an NWB file: dF/F traces
 * in a RoiResponseSeries over a PlaneSegmentation, the images as stimulus templates, an IndexSeries
 * and a TimeIntervals table (with a tier column) of the presentations.
 */
export interface ContinuousConfig {
  /** Imaging rate in Hz. */
  rate: number;
  stimulusSeconds: number;
  /** Grey between stimuli: uniform in [min, max] seconds ([0, 0] = back to back). */
  greySeconds: [number, number];
  /** Calcium kernel time constants (seconds): GCaMP6f-like by default. */
  riseSeconds: number;
  decaySeconds: number;
  /** dF/F of one event, before each ROI's own amplitude. */
  eventAmplitude: number;
  /** Per-frame Gaussian noise (dF/F). */
  noise: number;
  /** Slow drift: amplitude (dF/F) and time scale (seconds) of a per-ROI random walk pulled back to 0. */
  drift: number;
  driftSeconds: number;
}

export const DEFAULT_CONTINUOUS: ContinuousConfig = {
  rate: 30,
  stimulusSeconds: 0.5,
  greySeconds: [0.3, 0.5],
  riseSeconds: 0.05,
  decaySeconds: 0.4,
  eventAmplitude: 0.3,
  noise: 0.05,
  drift: 0.05,
  driftSeconds: 60,
};

/** Traces are simulated in memory: at most this many values (frames x ROIs). */
export const MAX_TRACE_VALUES = 2 ** 28;

type Tier = 'train' | 'validation' | 'test';

export interface ContinuousResult {
  file: string;
  frames: number;
  rois: number;
  presentations: number;
  seconds: number;
}

interface Plan {
  tier: Tier;
  template: number;
}

async function planStimuli(cfg: SynthConfig, rng: Rng): Promise<{ plans: Plan[]; templates: Uint8Array[] }> {
  const photos = new Map<PhotoName, GreyPhoto>();
  for (const name of PHOTOS) photos.set(name, await loadPhoto(name));
  const reserved = new Set([...cfg.validationPhotos, ...cfg.testPhotos]);
  const source: Record<Tier, PhotoName[]> = { train: PHOTOS.filter((p) => !reserved.has(p)), validation: cfg.validationPhotos, test: cfg.testPhotos };
  const crops: { photo: PhotoName; crop: CropSpec }[] = [];
  const plans: Plan[] = [];
  const add = (tier: Tier, count: number, repeats: number): void => {
    for (let i = 0; i < count; i++) {
      const photo = source[tier][rng.int(source[tier].length)];
      crops.push({ photo, crop: planCrop(rng, photos.get(photo)!, cfg.cropScale) });
      for (let r = 0; r < repeats; r++) plans.push({ tier, template: crops.length - 1 });
    }
  };
  add('train', cfg.trainTrials, 1);
  add('validation', cfg.validationTrials, 1);
  add('test', cfg.testImages, cfg.repeats);
  rng.shuffle(plans);
  const templates = await Promise.all(crops.map((c) => cropPhoto(photos.get(c.photo)!, c.crop, IMAGE_W, IMAGE_H)));
  return { plans, templates };
}

/** Expected events per second for each template (rows) and for the grey screen (last row). */
async function eventRates(model: V1Model, templates: Uint8Array[], cfg: SynthConfig, stimulusSeconds: number): Promise<Float32Array> {
  const sim = cfg.simulator;
  const P = sim.height * sim.width;
  const n = sim.neurons;
  const rows = templates.length + 1;
  const rates = new Float32Array(rows * n);
  const batch = 64;
  const mu = new Float32Array(n);
  for (let b0 = 0; b0 < rows; b0 += batch) {
    const count = Math.min(batch, rows - b0);
    const stim = new Float32Array(count * P);
    for (let i = 0; i < count; i++) {
      const t = b0 + i;
      const grey = t < templates.length ? resizeArea(templates[t], IMAGE_H, IMAGE_W, sim.height, sim.width) : new Float32Array(P).fill(127.5);
      stimulusContrast(grey, stim.subarray(i * P, (i + 1) * P));
    }
    const drive = await model.drive(stim, count);
    if (b0 === 0) model.calibrate(drive, count);
    for (let i = 0; i < count; i++) {
      model.expected(drive.subarray(i * n, (i + 1) * n), 0, mu);
      // The simulator's rates are events per trial (one stimulus duration).
      for (let k = 0; k < n; k++) rates[(b0 + i) * n + k] = mu[k] / stimulusSeconds;
    }
  }
  return rates;
}

export async function synthesizeContinuous(file: string, cfg: SynthConfig, c: ContinuousConfig = DEFAULT_CONTINUOUS, opts: { quiet?: boolean; force?: boolean } = {}): Promise<ContinuousResult> {
  const t0 = Date.now();
  if (existsSync(file) && !opts.force) throw ccError('CC_ERR_DATASET_MISSING', file, 'output file exists (use --force to overwrite)');
  if (!(c.rate > 0) || !(c.stimulusSeconds > 0) || c.greySeconds[0] < 0 || c.greySeconds[1] < c.greySeconds[0]) throw ccError('CC_ERR_OPTION', 'continuous simulation needs a positive rate and stimulus duration and 0 <= grey min <= grey max');
  const sim = cfg.simulator;
  const n = sim.neurons;
  // Checked before any work: the longest the session can be (every grey interval at its maximum).
  const shown = cfg.trainTrials + cfg.validationTrials + cfg.testImages * cfg.repeats;
  const longest = Math.ceil((4 + shown * (c.stimulusSeconds + c.greySeconds[1])) * c.rate);
  if (longest * n > MAX_TRACE_VALUES)
    throw ccError('CC_ERR_OPTION', `the session would be up to ${longest} frames x ${n} ROIs = ${(longest * n).toLocaleString('en')} values, over ${MAX_TRACE_VALUES.toLocaleString('en')} (1 GiB of float32); lower --rate or --neurons, or use --small / --tiny`);
  const rng = new Rng(sim.seed);
  const { plans, templates } = await planStimuli(cfg, rng);
  const model = await V1Model.create(sim);
  const rates = await eventRates(model, templates, cfg, c.stimulusSeconds);
  const greyRow = templates.length;

  // Presentation times on the imaging clock (the first after two seconds of grey).
  const timing = new Rng(sim.seed * 7919 + 11);
  const onsets = new Float64Array(plans.length);
  let t = 2;
  for (let i = 0; i < plans.length; i++) {
    onsets[i] = t;
    t += c.stimulusSeconds + timing.uniform(c.greySeconds[0], c.greySeconds[1]);
  }
  const frames = Math.ceil((t + 2) * c.rate);
  const dt = 1 / c.rate;

  const noise = new Rng(sim.seed * 31 + 5);
  const amplitude = Float32Array.from({ length: n }, () => c.eventAmplitude * noise.uniform(0.5, 1.5));
  const traces = new Float32Array(frames * n);
  const rise = new Float64Array(n);
  const decay = new Float64Array(n);
  const drift = new Float64Array(n);
  const kr = Math.exp(-dt / c.riseSeconds);
  const kd = Math.exp(-dt / c.decaySeconds);
  const pull = Math.exp(-dt / c.driftSeconds);
  const driftStep = c.drift * Math.sqrt(1 - pull * pull);
  const bar = progress('continuous', frames, { quiet: opts.quiet });
  let next = 0;
  let showing = -1;
  for (let f = 0; f < frames; f++) {
    const time = f * dt;
    while (next < plans.length && onsets[next] <= time) showing = next++;
    const on = showing >= 0 && time < onsets[showing] + c.stimulusSeconds;
    const row = (on ? plans[showing].template : greyRow) * n;
    const out = traces.subarray(f * n, (f + 1) * n);
    for (let k = 0; k < n; k++) {
      const p = rates[row + k] * dt;
      // Events in one frame: Bernoulli is exact enough at these rates (p << 1), Poisson otherwise.
      let events = 0;
      if (p > 0.2) {
        const l = Math.exp(-p);
        for (let q = noise.next(); q > l; q *= noise.next()) events++;
      } else if (noise.next() < p) events = 1;
      rise[k] = rise[k] * kr + events;
      decay[k] = decay[k] * kd + events;
      drift[k] = drift[k] * pull + driftStep * noise.normal();
      out[k] = amplitude[k] * (decay[k] - rise[k]) + drift[k] + c.noise * noise.normal();
    }
    if ((f & 255) === 0) bar.tick(Math.min(256, frames - f));
  }
  bar.stop();

  const w = NwbWriter.create(file, { identifier: `cortexcast-synth-${sim.seed}-${Date.now()}`, sessionDescription: `simulated V1 (cortexcast synth): ${n} ROIs, ${plans.length} presentations at ${c.rate} Hz`, sessionStartTime: new Date() });
  try {
    const dev = w.group('general/devices/SimulatedMicroscope', 'Device', { description: 'simulated two-photon microscope (cortexcast synth)' });
    const plane = w.group('general/optophysiology/ImagingPlane', 'ImagingPlane');
    w.text(plane, 'description', 'simulated layer 2/3 of V1');
    w.scalar(plane, 'excitation_lambda', 920, '<f');
    w.scalar(plane, 'imaging_rate', c.rate, '<f');
    w.text(plane, 'indicator', 'simulated GCaMP (difference of exponentials)');
    w.text(plane, 'location', 'V1');
    const oc = w.group('general/optophysiology/ImagingPlane/OpticalChannel', 'OpticalChannel');
    w.text(oc, 'description', 'green');
    w.scalar(oc, 'emission_lambda', 510, '<f');
    w.link(plane, 'device', dev.path);

    w.group('processing/ophys', 'ProcessingModule', { description: 'optical physiology: simulated ROIs and their dF/F' });
    w.group('processing/ophys/ImageSegmentation', 'ImageSegmentation');
    const ps = w.table('processing/ophys/ImageSegmentation/PlaneSegmentation', 'PlaneSegmentation', 'simulated ROIs', n, [
      { name: 'cortical_position', data: Float32Array.from(model.params.cortex), shape: [n, 3], description: 'simulated position in cortex (x, y, depth)' },
    ], BigInt64Array.from({ length: n }, (_, i) => BigInt(i + 1)));
    w.group(`${ps.path}/reference_images`);
    w.link(ps, 'imaging_plane', plane.path);
    w.group('processing/ophys/DfOverF', 'DfOverF');
    const series = w.timeSeries('processing/ophys/DfOverF/RoiResponseSeries', 'RoiResponseSeries', { data: traces, shape: [frames, n], unit: 'n/a', startingTime: 0, rate: c.rate, description: 'simulated dF/F: calcium transients of Poisson events, noise and slow drift' });
    w.region(series, 'rois', Int32Array.from({ length: n }, (_, i) => i), ps, 'every ROI of the plane segmentation');

    const tpl = w.images('stimulus/templates/StimulusImages', templates.map((pixels) => ({ pixels, height: IMAGE_H, width: IMAGE_W })), 'natural image crops shown (grey levels 0..255)');
    const ix = w.timeSeries('stimulus/presentation/StimulusIndex', 'IndexSeries', { data: Uint32Array.from(plans.map((p) => p.template)), shape: [plans.length], unit: 'N/A', timestamps: onsets, description: 'index of the template shown at each onset' });
    w.link(ix, 'indexed_images', tpl.path);
    w.table('intervals/stimulus_presentations', 'TimeIntervals', 'stimulus presentations: image index and data split tier', plans.length, [
      { name: 'start_time', data: onsets, description: 'onset (seconds)' },
      { name: 'stop_time', data: onsets.map((o) => o + c.stimulusSeconds), description: 'offset (seconds)' },
      { name: 'image_index', data: Uint32Array.from(plans.map((p) => p.template)), description: 'index into /stimulus/templates/StimulusImages' },
      { name: 'tier', data: plans.map((p) => p.tier), description: 'data split: train, validation or test' },
    ]);
    w.close();
  } catch (e) {
    w.abort();
    throw e;
  }
  return { file, frames, rois: n, presentations: plans.length, seconds: (Date.now() - t0) / 1000 };
}
