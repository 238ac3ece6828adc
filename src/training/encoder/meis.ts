import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { ccError } from '../../common/errors.js';
import { readNpy, writeNpy } from '../../common/npy.js';
import { progress } from '../../common/progress.js';
import { mean } from '../../common/stats.js';
import type { EncoderConfig } from '../../models/architectures/encoder.js';
import { loadBundle } from '../../models/bundle.js';
import { gaussianKernel2d } from '../../models/decoder-runner.js';
import { createSession } from '../../models/ort.js';
import { Rng } from '../../models/rng.js';
import { SensoriumDataset } from '../../datasets/sensorium.js';
import { openDataset } from '../../datasets/dataset-source.js';
import { SimulatedTruth } from '../data/simulated-truth.js';
import { blurRadiusFor, buildImageStep, buildSelectedMeiStep, STEP_IMAGE, STEP_KERNEL, STEP_LR, STEP_NEURON, STEP_NEXT, STEP_SCORE } from './image-optimisation.js';
import { pixCorr } from '../eval/metrics/image-metrics.js';
import { reconstructionGrid, writeFile } from '../report/figures.js';
import { NEURON_CORRELATION_FILE } from './train-encoder.js';
import { z } from 'zod';
import { readJsonFile } from '../../common/json-file.js';

/** meis.json: written at the start (complete: false) and rewritten when every chunk is done. */
const MEIS_JSON = z
  .object({
    key: z.string().optional(),
    complete: z.boolean(),
    height: z.number().int().positive().optional(),
    width: z.number().int().positive().optional(),
  })
  .passthrough()
  .refine((m) => !m.complete || (m.height !== undefined && m.width !== undefined), { message: 'a complete MEI set needs height and width' });

export interface MeiSettings {
  steps: number;
  lr: number;
  blurSigma: number;
  /** Per-image std after each step (the report's 0.15), then clipped to [-1, 1]. */
  std: number;
  /** Neurons optimised together (one image each). */
  batch: number;
  seed: number;
}

export const DEFAULT_MEI_SETTINGS: MeiSettings = { steps: 1000, lr: 1, blurSigma: 1, std: 0.15, batch: 64, seed: 1 };

export interface MeiOptions extends Partial<MeiSettings> {
  encoder: string;
  out: string;
  /** Neuron indices (rows of the encoder's output) to optimise; default all, in order. */
  neurons?: number[];
  /** Gaussian-readout encoders: read out only each image's neuron (default true; false: the generic step). */
  fast?: boolean;
  threads?: number;
  quiet?: boolean;
  log?: (s: string) => void;
}

export interface MeiResult {
  dir: string;
  neurons: number[];
  /** [neurons, H, W] in the encoder's input space (z-scored pixels). */
  meis: Float32Array;
  /** Predicted response of each neuron to its MEI. */
  activation: Float32Array;
  seconds: number;
  /** Simulated data: per-neuron correlation of MEI and true receptive field (phase-invariant for complex cells). */
  rfCorrelation?: { all: number; simple: number; complex: number; perNeuron: Float32Array };
}

const CHUNK_DIR = 'chunks';

/** The encoder's architecture as its manifest records it (training.config.encoder), checked field by field. */
const ENCODER_CONFIG = z
  .object({
    hidden: z.number().int().positive(),
    layers: z.number().int().min(0),
    firstKernel: z.number().int().positive(),
    hiddenKernel: z.number().int().positive(),
    separable: z.boolean(),
    readout: z.enum(['gaussian', 'factorized']),
    initMu: z.number(),
    initSigma: z.number(),
    height: z.number().int().positive(),
    width: z.number().int().positive(),
  })
  .strict();

function encoderConfigOf(config: Record<string, unknown>, dir: string): EncoderConfig {
  const r = ENCODER_CONFIG.safeParse(config.encoder);
  if (!r.success) throw ccError('CC_ERR_BUNDLE', dir, `manifest.json training.config.encoder: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  return r.data;
}

/**
 * Most exciting inputs by gradient ascent through a frozen encoder bundle, `batch` neurons at a time.
 * Each finished chunk is written at once (chunks/<first>.npy), so an interrupted run resumes where it
 * stopped; the final files are meis.npy [n, H, W], unit_ids.npy, activation.npy and meis.json.
 *
 * One pipeline read top to bottom (settings check, step graph, chunk loop, final files), kept as one
 * function over 80 lines so the resume logic and the files it writes stay side by side.
 */
export async function generateMeis(o: MeiOptions): Promise<MeiResult> {
  const t0 = Date.now();
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const s: MeiSettings = { ...DEFAULT_MEI_SETTINGS, ...Object.fromEntries(Object.entries(o).filter(([k, v]) => k in DEFAULT_MEI_SETTINGS && v !== undefined)) };
  const enc = loadBundle(o.encoder);
  if (enc.manifest.kind !== 'encoder') throw ccError('CC_ERR_WRONG_KIND', enc.dir, enc.manifest.kind, 'MEIs need an encoder bundle (cortexcast train encoder)');
  const { height: H, width: W } = enc.manifest.output;
  const P = H * W;
  const total = enc.manifest.input.neurons;
  const neurons = o.neurons ?? [...Array(total).keys()];
  const bad = neurons.find((i) => !Number.isInteger(i) || i < 0 || i >= total);
  if (bad !== undefined) throw ccError('CC_ERR_OPTION', `neuron index ${bad} is outside 0..${total - 1}`);
  mkdirSync(join(o.out, CHUNK_DIR), { recursive: true });
  const settingsFile = join(o.out, 'meis.json');
  const settingsKey = JSON.stringify({ encoder: enc.manifest.onnx.sha256, settings: s, neurons });
  if (existsSync(settingsFile)) {
    const prev = readJsonFile(settingsFile, MEIS_JSON, 'CC_ERR_MEIS', o.out);
    if (prev.key && prev.key !== settingsKey) throw ccError('CC_ERR_MEIS', o.out, 'it holds MEIs made with other settings or another encoder; use a new --out');
  }
  writeFileSync(settingsFile, JSON.stringify({ key: settingsKey, complete: false }, null, 1));

  const radius = blurRadiusFor(s.blurSigma);
  const cfg = encoderConfigOf(enc.manifest.training.config, enc.dir);
  // Gaussian readouts: a step that reads out only each image's own neuron (the last chunk is padded).
  const selected = cfg?.readout === 'gaussian' && o.fast !== false;
  const graph = selected ? buildSelectedMeiStep(enc.model, cfg, s.batch, { meiStd: s.std, blurRadius: radius }) : buildImageStep(enc.model, 'mei', { meiStd: s.std, blurRadius: radius });
  const { session } = await createSession(graph, { intraOpThreads: o.threads });
  const kernel = new ort.Tensor('float32', gaussianKernel2d(s.blurSigma, radius), [1, 1, 2 * radius + 1, 2 * radius + 1]);
  const lr = new ort.Tensor('float32', Float32Array.of(s.lr), []);

  const meis = new Float32Array(neurons.length * P);
  const activation = new Float32Array(neurons.length);
  const bar = progress('meis', neurons.length, { quiet: o.quiet, extra: '{rate} neurons/s' });
  let fresh = 0;
  const tFresh = Date.now();
  for (let c0 = 0; c0 < neurons.length; c0 += s.batch) {
    const ids = neurons.slice(c0, c0 + s.batch);
    const file = join(o.out, CHUNK_DIR, `${String(c0).padStart(6, '0')}.npy`);
    const actFile = file.replace(/\.npy$/, '.act.npy');
    if (existsSync(file) && existsSync(actFile)) {
      meis.set(readNpy(file).data as Float32Array, c0 * P);
      activation.set(readNpy(actFile).data as Float32Array, c0);
      bar.tick(ids.length);
      continue;
    }
    const rng = new Rng(s.seed * 1_000_003 + c0);
    // The selected-neuron step has a fixed batch: pad the last chunk by repeating its last neuron.
    const b = selected ? s.batch : ids.length;
    const padded = Array.from({ length: b }, (_, i) => ids[Math.min(i, ids.length - 1)]);
    let x: Float32Array = Float32Array.from({ length: b * P }, () => rng.normal() * 0.15);
    const neuron = new ort.Tensor('int64', BigInt64Array.from(padded.map(BigInt)), [b, 1]);
    for (let step = 0; step < s.steps; step++) {
      const out = await session.run({ [STEP_IMAGE]: new ort.Tensor('float32', x, [b, 1, H, W]), [STEP_NEURON]: neuron, [STEP_LR]: lr, [STEP_KERNEL]: kernel });
      x = out[STEP_NEXT].data as Float32Array;
    }
    // A step's score is the response to the image it started from: score the final image with one more run.
    const last = await session.run({ [STEP_IMAGE]: new ort.Tensor('float32', x, [b, 1, H, W]), [STEP_NEURON]: neuron, [STEP_LR]: new ort.Tensor('float32', Float32Array.of(0), []), [STEP_KERNEL]: kernel });
    const k = ids.length;
    x = x.subarray(0, k * P);
    const score = (last[STEP_SCORE].data as Float32Array).subarray(0, k);
    writeNpy(file, x, [k, H, W]);
    writeNpy(actFile, score, [k]);
    meis.set(x, c0 * P);
    activation.set(score, c0);
    fresh += k;
    bar.tick(k, { rate: (fresh / ((Date.now() - tFresh) / 1000)).toFixed(1) });
  }
  bar.stop();

  writeNpy(join(o.out, 'meis.npy'), meis, [neurons.length, H, W]);
  writeNpy(join(o.out, 'unit_ids.npy'), BigInt64Array.from(neurons.map((i) => BigInt(enc.unitIds[i]))));
  writeNpy(join(o.out, 'neuron_index.npy'), BigInt64Array.from(neurons.map(BigInt)));
  writeNpy(join(o.out, 'activation.npy'), activation);
  const result: MeiResult = { dir: o.out, neurons, meis, activation, seconds: (Date.now() - t0) / 1000 };
  // Simulated data: the simulator rebuilt from the encoder's dataset gives the true receptive fields.
  const dataset = enc.manifest.training.dataset;
  const truth = existsSync(dataset) ? await SimulatedTruth.load(openDataset(dataset)) : undefined;
  const rf = truth && rfCorrelation(truth, neurons, meis, H, W);
  if (rf) result.rfCorrelation = rf;
  const sample = Math.min(20, neurons.length);
  const pick = Array.from({ length: sample }, (_, i) => Math.floor((i * neurons.length) / sample));
  const rows = [{ label: 'MEI', images: Float32Array.from(pick.flatMap((i) => Array.from(meis.subarray(i * P, (i + 1) * P)))) }];
  if (rf) {
    const fields = truth!.receptiveFields();
    const nAll = fields.complex.length;
    rows.push({ label: 'true RF', images: Float32Array.from(pick.flatMap((i) => Array.from({ length: P }, (_, p) => fields.even[p * nAll + neurons[i]]))) });
  }
  writeFile(join(o.out, 'meis.png'), reconstructionGrid(rows, sample, H, W, { scale: 3, columns: 10 }));
  writeFileSync(
    settingsFile,
    JSON.stringify(
      {
        key: settingsKey,
        complete: true,
        encoder: enc.dir,
        encoderSha256: enc.manifest.onnx.sha256,
        settings: { ...s, blurRadius: radius },
        neurons: neurons.length,
        height: H,
        width: W,
        seconds: result.seconds,
        meanActivation: mean(activation),
        rfCorrelation: rf ? { all: rf.all, simple: rf.simple, complex: rf.complex } : undefined,
        files: { meis: 'meis.npy', unitIds: 'unit_ids.npy', neuronIndex: 'neuron_index.npy', activation: 'activation.npy', sheet: 'meis.png' },
      },
      null,
      1,
    ),
  );
  log(`meis: ${neurons.length} neurons in ${result.seconds.toFixed(1)} s, mean predicted response ${mean(activation).toFixed(3)}${rf ? `, MEI/RF correlation ${rf.all.toFixed(3)} (simple ${rf.simple.toFixed(3)}, complex ${rf.complex.toFixed(3)})` : ''}`);
  return result;
}

/**
 * Neuron indices from a spec: 'all' (undefined: every neuron), 'first:N', or 'top:N' (the N neurons
 * the encoder predicts best on validation, returned in neuron order).
 */
export function selectNeurons(encoderDir: string, spec: string): number[] | undefined {
  if (spec === 'all') return undefined;
  const m = /^(first|top):(\d+)$/.exec(spec);
  if (!m) throw ccError('CC_ERR_OPTION', `neuron selection '${spec}' (use all, first:N or top:N)`);
  const k = Number(m[2]);
  const enc = loadBundle(encoderDir);
  const total = enc.manifest.input.neurons;
  if (k < 1 || k > total) throw ccError('CC_ERR_OPTION', `${spec}: the encoder has ${total} neurons`);
  if (m[1] === 'first') return [...Array(k).keys()];
  const f = join(enc.dir, NEURON_CORRELATION_FILE);
  if (!existsSync(f)) throw ccError('CC_ERR_BUNDLE', enc.dir, `${NEURON_CORRELATION_FILE} is missing (needed for top:N)`);
  const corr = readNpy(f).data as Float32Array;
  return [...corr.keys()].sort((a, b) => corr[b] - corr[a]).slice(0, k).sort((a, b) => a - b);
}

/** Load MEIs written by generateMeis. */
export function loadMeis(dir: string): { meis: Float32Array; neuronIndex: number[]; height: number; width: number } {
  const f = join(dir, 'meis.json');
  if (!existsSync(f)) throw ccError('CC_ERR_MEIS', dir, 'no meis.json (run cortexcast meis first)');
  const meta = readJsonFile(f, MEIS_JSON, 'CC_ERR_MEIS', dir);
  if (!meta.complete) throw ccError('CC_ERR_MEIS', dir, 'MEI generation did not finish; run cortexcast meis again to resume');
  const a = readNpy(join(dir, 'meis.npy'));
  const idx = readNpy(join(dir, 'neuron_index.npy'));
  return { meis: a.data as Float32Array, neuronIndex: Array.from(idx.data as BigInt64Array, Number), height: meta.height!, width: meta.width! };
}

/** Per-neuron correlation of MEIs with the simulator's true receptive fields (undefined off-grid). */
function rfCorrelation(truth: SimulatedTruth, neurons: number[], meis: Float32Array, H: number, W: number): MeiResult['rfCorrelation'] {
  const rf = truth.receptiveFields();
  if (rf.height !== H || rf.width !== W) return undefined;
  const n = rf.complex.length;
  const P = H * W;
  const column = (m: Float32Array, i: number): Float32Array => Float32Array.from({ length: P }, (_, p) => m[p * n + i]);
  const perNeuron = new Float32Array(neurons.length);
  let simple = 0;
  let complex = 0;
  let ns = 0;
  neurons.forEach((i, k) => {
    const m = meis.subarray(k * P, (k + 1) * P);
    const ce = pixCorr(m, column(rf.even, i));
    // A complex cell responds to its Gabor at any phase: score the MEI's projection onto the quadrature pair.
    const v = rf.complex[i] ? Math.min(1, Math.hypot(ce, pixCorr(m, column(rf.odd, i)))) : ce;
    perNeuron[k] = v;
    if (rf.complex[i]) complex += v;
    else {
      simple += v;
      ns++;
    }
  });
  const nc = neurons.length - ns;
  return { all: mean(perNeuron), simple: ns ? simple / ns : NaN, complex: nc ? complex / nc : NaN, perNeuron };
}
