import { newGraph, tensor } from '../../models/onnx/index.js';
import { createSession, runOnce } from '../../models/ort.js';
import { Rng } from '../../models/rng.js';

/**
 * The built-in simulated V1: a population of model neurons with retinotopically arranged Gabor
 * receptive fields (simple: rectified linear; complex: quadrature energy), divisive normalisation by
 * the population's mean energy, per-neuron gain and baseline, state (running) modulation and Poisson
 * trial-to-trial noise. Responses are sparse and skewed like deconvolved two-photon activity:
 * after std scaling their mean is ~0.3, as in B-6.
 */
export interface SimulatorConfig {
  neurons: number;
  /** Simulation grid (the stimulus is area-resampled to it). */
  height: number;
  width: number;
  /** Fraction of complex (energy) cells; the rest are simple (rectified) cells. */
  complexFraction: number;
  /** Median RF size (Gaussian sigma, pixels of the simulation grid) and its log-normal spread. */
  rfSigmaMedian: number;
  rfSigmaSpread: number;
  /** Median mean event rate per trial and its log-normal spread (sets response sparsity). */
  rateMedian: number;
  rateSpread: number;
  /** Strength of the divisive normalisation pool relative to each neuron's semi-saturation constant. */
  normalisation: number;
  /** Multiplicative gain change per unit of running speed (cm/s / 10). */
  runningGain: number;
  seed: number;
}

export const DEFAULT_SIMULATOR: SimulatorConfig = {
  neurons: 8600,
  height: 36,
  width: 64,
  complexFraction: 0.6,
  rfSigmaMedian: 2.6,
  rfSigmaSpread: 0.35,
  rateMedian: 0.2,
  rateSpread: 0.6,
  normalisation: 1,
  runningGain: 0.25,
  seed: 1,
};

/** Per-neuron parameters: everything needed to regenerate each receptive field exactly. */
export interface NeuronParams {
  /** Cortical position in microns (x, y, depth), written as cell_motor_coordinates. */
  cortex: Float32Array;
  centerX: Float32Array;
  centerY: Float32Array;
  sigma: Float32Array;
  aspect: Float32Array;
  orientation: Float32Array;
  /** Spatial frequency, cycles per pixel. */
  frequency: Float32Array;
  phase: Float32Array;
  complex: Uint8Array;
  /** Semi-saturation constant of the normalisation, per neuron. */
  c50: Float32Array;
  /** Filled by calibrate(): scale of the normalised drive to events per trial. */
  scale: Float32Array;
  baseline: Float32Array;
}

export const NEURON_PARAM_KEYS = ['centerX', 'centerY', 'sigma', 'aspect', 'orientation', 'frequency', 'phase', 'complex', 'c50', 'scale', 'baseline'] as const;

export function drawNeurons(cfg: SimulatorConfig): NeuronParams {
  const n = cfg.neurons;
  const rng = new Rng(cfg.seed * 7919 + 17);
  const f32 = (): Float32Array => new Float32Array(n);
  const p: NeuronParams = {
    cortex: new Float32Array(n * 3),
    centerX: f32(),
    centerY: f32(),
    sigma: f32(),
    aspect: f32(),
    orientation: f32(),
    frequency: f32(),
    phase: f32(),
    complex: new Uint8Array(n),
    c50: f32(),
    scale: f32(),
    baseline: f32(),
  };
  const sheetW = 1200;
  const sheetH = 700;
  for (let i = 0; i < n; i++) {
    const cx = rng.uniform(0, sheetW);
    const cy = rng.uniform(0, sheetH);
    p.cortex.set([cx, cy, rng.uniform(180, 420)], i * 3);
    // Retinotopy: cortical position maps linearly onto the visual field, with local scatter.
    p.centerX[i] = clamp(1 + ((cfg.width - 2) * cx) / sheetW + rng.normal() * 1.5, 0, cfg.width - 1);
    p.centerY[i] = clamp(1 + ((cfg.height - 2) * cy) / sheetH + rng.normal() * 1.5, 0, cfg.height - 1);
    p.sigma[i] = clamp(cfg.rfSigmaMedian * Math.exp(cfg.rfSigmaSpread * rng.normal()), 0.8, 8);
    p.aspect[i] = rng.uniform(0.45, 1);
    p.orientation[i] = rng.uniform(0, Math.PI);
    p.frequency[i] = rng.uniform(0.12, 0.3) / p.sigma[i];
    p.phase[i] = rng.uniform(0, 2 * Math.PI);
    p.complex[i] = rng.next() < cfg.complexFraction ? 1 : 0;
    p.c50[i] = rng.uniform(0.5, 1.5);
    p.baseline[i] = 0.02 * Math.exp(0.8 * rng.normal());
  }
  return p;
}

const clamp = (v: number, lo: number, hi: number): number => Math.min(hi, Math.max(lo, v));

/**
 * The two quadrature Gabor filters of every neuron, [pixels, neurons] each (the MatMul layout),
 * zero-mean and unit norm so mean luminance does not drive the cells.
 */
export function receptiveFields(p: NeuronParams, h: number, w: number): { even: Float32Array; odd: Float32Array } {
  const n = p.sigma.length;
  const P = h * w;
  const even = new Float32Array(P * n);
  const odd = new Float32Array(P * n);
  const ge = new Float64Array(P);
  const go = new Float64Array(P);
  const env = new Float64Array(P);
  for (let i = 0; i < n; i++) {
    const c = Math.cos(p.orientation[i]);
    const s = Math.sin(p.orientation[i]);
    const sg = p.sigma[i];
    let envSum = 0;
    let sumE = 0;
    let sumO = 0;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const dx = x - p.centerX[i];
        const dy = y - p.centerY[i];
        const xr = c * dx + s * dy;
        const yr = -s * dx + c * dy;
        const e = Math.exp(-(xr * xr + p.aspect[i] * p.aspect[i] * yr * yr) / (2 * sg * sg));
        const arg = 2 * Math.PI * p.frequency[i] * xr + p.phase[i];
        const k = y * w + x;
        env[k] = e;
        ge[k] = e * Math.cos(arg);
        go[k] = e * Math.sin(arg);
        envSum += e;
        sumE += ge[k];
        sumO += go[k];
      }
    // Remove the DC response with the envelope's shape, then normalise each filter.
    let nE = 0;
    let nO = 0;
    for (let k = 0; k < P; k++) {
      ge[k] -= (sumE / envSum) * env[k];
      go[k] -= (sumO / envSum) * env[k];
      nE += ge[k] * ge[k];
      nO += go[k] * go[k];
    }
    nE = Math.sqrt(nE) || 1;
    nO = Math.sqrt(nO) || 1;
    for (let k = 0; k < P; k++) {
      even[k * n + i] = ge[k] / nE;
      odd[k * n + i] = go[k] / nO;
    }
  }
  return { even, odd };
}

/** The stimulus as the cells see it: grey levels -> contrast around mid-grey. */
export function stimulusContrast(grey: ArrayLike<number>, out = new Float32Array(grey.length)): Float32Array {
  for (let i = 0; i < grey.length; i++) out[i] = (grey[i] - 127.5) / 64;
  return out;
}

/**
 * Noise-free normalised drive of every neuron, evaluated by ONNX Runtime:
 * drive = complex ? sqrt(a^2 + b^2) : relu(a), with a, b the quadrature filter outputs;
 * out = drive / (c50 + k * mean_neurons(energy)).
 */
export class V1Model {
  private constructor(
    readonly params: NeuronParams,
    readonly cfg: SimulatorConfig,
    private readonly run: (x: Float32Array, batch: number) => Promise<Float32Array>,
  ) {}

  static async create(cfg: SimulatorConfig, params = drawNeurons(cfg)): Promise<V1Model> {
    const P = cfg.height * cfg.width;
    const n = cfg.neurons;
    const { even, odd } = receptiveFields(params, cfg.height, cfg.width);
    const g = newGraph('simulated_v1');
    const x = g.input('stimulus', 'float32', ['batch', P]);
    const we = g.initializer('rf_even', tensor('float32', [P, n], even));
    const wo = g.initializer('rf_odd', tensor('float32', [P, n], odd));
    const mask = g.initializer('is_complex', tensor('float32', [n], Float32Array.from(params.complex)));
    const c50 = g.initializer('c50', tensor('float32', [n], params.c50));
    const k = g.initializer('pool_weight', tensor('float32', [], [cfg.normalisation]));
    const a = g.op('MatMul', [x, we]);
    const b = g.op('MatMul', [x, wo]);
    const energy = g.op('Sqrt', [g.op('Add', [g.op('Mul', [a, a]), g.op('Mul', [b, b])])]);
    const simple = g.op('Relu', [a]);
    const one = g.initializer('one', tensor('float32', [], [1]));
    const drive = g.op('Add', [g.op('Mul', [mask, energy]), g.op('Mul', [g.op('Sub', [one, mask]), simple])]);
    const pool = g.op('ReduceMean', [energy], { axes: [1], keepdims: 1 });
    const out = g.op('Div', [drive, g.op('Add', [c50, g.op('Mul', [k, pool])])]);
    g.output(out, 'drive');
    const { session } = await createSession(g);
    return new V1Model(params, cfg, async (xs, batch) => {
      const res = await runOnce(session, { stimulus: tensor('float32', [batch, P], xs) });
      return res.drive.data as Float32Array;
    });
  }

  /** Normalised drive for a batch of stimuli in contrast units, [batch, P] -> [batch, neurons]. */
  drive(stimuli: Float32Array, batch: number): Promise<Float32Array> {
    return this.run(stimuli, batch);
  }

  /** Set each neuron's scale so its mean event rate over these stimuli hits a log-normal target. */
  calibrate(drives: Float32Array, batch: number): void {
    const n = this.cfg.neurons;
    const rng = new Rng(this.cfg.seed * 104729 + 3);
    const mean = new Float64Array(n);
    for (let b = 0; b < batch; b++) for (let i = 0; i < n; i++) mean[i] += drives[b * n + i] / batch;
    for (let i = 0; i < n; i++) {
      const target = this.cfg.rateMedian * Math.exp(this.cfg.rateSpread * rng.normal());
      this.params.scale[i] = target / Math.max(mean[i], 1e-6);
    }
  }

  /** Expected events per trial (noise-free), given the drive and the trial's running speed. */
  expected(drive: Float32Array, running: number, out = new Float32Array(drive.length)): Float32Array {
    const gain = 1 + this.cfg.runningGain * Math.tanh(running / 10);
    const p = this.params;
    for (let i = 0; i < drive.length; i++) out[i] = gain * p.scale[i] * drive[i] + p.baseline[i];
    return out;
  }
}

/** Poisson sample (Knuth for small means, normal approximation above 30). */
export function poisson(rng: Rng, mean: number): number {
  if (mean <= 0) return 0;
  if (mean > 30) return Math.max(0, Math.round(mean + Math.sqrt(mean) * rng.normal()));
  const l = Math.exp(-mean);
  let k = 0;
  let p = rng.next();
  while (p > l) {
    k++;
    p *= rng.next();
  }
  return k;
}
