import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { ccError } from '../../common/errors.js';
import type { ResponseScaling } from '../../common/scaling.js';
import { buildRidgeGraph, DECODER_INPUT, DECODER_OUTPUT } from '../../models/architectures/ridge.js';
import { tensor, type Graph } from '../../models/onnx/index.js';
import { createSession, runOnce } from '../../models/ort.js';
import { Gemm } from '../engine/linalg.js';
import { DEFAULT_ALPHAS } from '../ridge/ridge.js';
import { writeTrainedBundle } from '../run/export.js';
import { composeRidgeRefiner, type TransferRefiner } from './refiner.js';
import { chooseAlpha, decodeHeldOut, heldOutScores, heldOutTargets, StatisticsSolver, type CalibratedRidge, type HeldOut } from './solve.js';
import { RidgeStatistics, type Forgetting } from './statistics.js';

/** One calibration frame: raw responses with the stimulus shown (grey, at the decoder's size). */
export interface CalibrationFrame {
  raw: Float32Array;
  image: Float32Array;
  /** Seconds on the calibration's clock (the rig's acquisition time when it has one). */
  t: number;
  imageId?: number;
  /** The units' ids in response order; absent: 0..n-1. */
  unitIds?: readonly number[];
}

export interface CalibratorOptions {
  /** Model name: the bundle is written to `<modelsDir>/<name>` (the server serves it under that name). */
  name: string;
  modelsDir: string;
  height: number;
  width: number;
  forgetting?: Forgetting;
  alphas?: readonly number[];
  /** Fraction of image ids held out for choosing alpha and scoring (deterministic by id). */
  heldOutFraction?: number;
  /** Held-out frames kept (the newest). */
  maxHeldOut?: number;
  /** Train frames needed before the first fit. */
  minFrames?: number;
  scaling?: ResponseScaling;
  refiner?: TransferRefiner;
  /** Write each refit's bundle (default); off: fit and score only (simulations of calibration). */
  write?: boolean;
  log?: (s: string) => void;
}

export interface CurvePoint {
  /** Seconds of calibration (frame clock) at the refit. */
  seconds: number;
  frames: number;
  heldOut: number;
  ssim: number;
  ssiml: number;
  mse: number;
  /** With a transferred refiner: the served (ridge + refiner) decoder's scores. */
  refined?: { ssim: number; ssiml: number; mse: number };
}

export interface RefitResult {
  name: string;
  dir: string;
  kind: 'ridge' | 'cnn';
  unitSet: string;
  neurons: number;
  frames: number;
  point: CurvePoint;
  alpha: number;
  fitSeconds: number;
  /** Frame-clock time of the newest frame the fit used. */
  lastFrameT: number;
  ridge: CalibratedRidge;
}

/** The statistics of one unit set (one day's ROIs); a different set of unit ids starts another. */
interface UnitSet {
  key: string;
  unitIds: number[];
  stats: RidgeStatistics;
  held: { raw: Float32Array; image: Float32Array; t: number }[];
  curve: CurvePoint[];
  firstT: number;
  lastT: number;
  /** Frames taken, and how many of them the last refit had. */
  added: number;
  fitted: number;
  alpha?: number;
}

/** Whether an image id belongs to the held-out calibration images: a fixed hash of the id, so every run agrees. */
export function isHeldOut(imageId: number | undefined, fraction: number): boolean {
  if (imageId === undefined || fraction <= 0) return false;
  const h = createHash('sha256').update(`cortexcast-heldout-${imageId}`).digest();
  return h.readUInt32BE(0) / 2 ** 32 < fraction;
}

export const unitSetKey = (ids: readonly number[]): string => createHash('sha256').update(ids.join(',')).digest('hex').slice(0, 12);

/**
 * Live calibration of a ridge decoder (optionally with a transferred refiner on top): frames update
 * the sufficient statistics as they come; `refit` solves, picks the regularisation on the held-out
 * image ids, scores the held-out frames (the learning curve) and writes the bundle atomically. A
 * frame whose unit ids differ from the current set's (ROIs lost or added between days) starts a
 * new unit set: the next refit writes a bundle for the new neurons under the same model name.
 */
export class Calibrator {
  private current?: UnitSet;
  private gemm?: Gemm;
  readonly o: Required<Omit<CalibratorOptions, 'refiner' | 'log'>> & Pick<CalibratorOptions, 'refiner' | 'log'>;
  /** Frames that named no stimulus the calibration could find. */
  skipped = 0;

  constructor(o: CalibratorOptions) {
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(o.name)) throw ccError('CC_ERR_CALIBRATION', `model name '${o.name.slice(0, 80)}': use 1-64 of A-Z a-z 0-9 . _ -`);
    if (o.refiner && (o.refiner.height !== o.height || o.refiner.width !== o.width))
      throw ccError('CC_ERR_CALIBRATION', `the refiner works on ${o.refiner.height}x${o.refiner.width} images, the calibration on ${o.height}x${o.width}`);
    this.o = {
      forgetting: { kind: 'none' },
      alphas: DEFAULT_ALPHAS,
      heldOutFraction: 0.1,
      maxHeldOut: 400,
      minFrames: 20,
      scaling: 'brainreader',
      write: true,
      // An option given as undefined (an unset CLI flag) keeps its default.
      ...(Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as CalibratorOptions),
    };
  }

  /** Create the linear-algebra sessions now, so that the first refit does not pay for them. */
  async warm(): Promise<void> {
    this.gemm ??= await Gemm.create();
  }

  get unitSet(): string | undefined {
    return this.current?.key;
  }

  get trainFrames(): number {
    return this.current?.stats.frames ?? 0;
  }

  get heldOutFrames(): number {
    return this.current?.held.length ?? 0;
  }

  /** Take a frame: into the statistics, or kept as held out. */
  add(f: CalibrationFrame): 'train' | 'held-out' {
    const ids = f.unitIds ?? Array.from({ length: f.raw.length }, (_, i) => i);
    if (ids.length !== f.raw.length) throw ccError('CC_ERR_CALIBRATION', `a frame lists ${ids.length} unit ids for ${f.raw.length} responses`);
    if (f.image.length !== this.o.height * this.o.width) throw ccError('CC_ERR_CALIBRATION', `stimulus of ${f.image.length} pixels; the decoder is ${this.o.height}x${this.o.width}`);
    let u = this.current;
    if (!u || u.unitIds.length !== ids.length || unitSetKey(ids) !== u.key) {
      const key = unitSetKey(ids);
      if (u) this.o.log?.(`calibrate: the unit set changed (${u.unitIds.length} -> ${ids.length} units, ${key}); fitting a new decoder for it`);
      u = this.current = { key, unitIds: [...ids], stats: new RidgeStatistics(ids.length, this.o.height * this.o.width, this.o.forgetting), held: [], curve: [], firstT: f.t, lastT: f.t, added: 0, fitted: 0 };
    }
    u.lastT = Math.max(u.lastT, f.t);
    u.added++;
    if (isHeldOut(f.imageId, this.o.heldOutFraction)) {
      u.held.push({ raw: f.raw, image: f.image, t: f.t });
      if (u.held.length > this.o.maxHeldOut) u.held.shift();
      return 'held-out';
    }
    u.stats.add(f.raw, f.image, f.t);
    return 'train';
  }

  /** Frames since the last refit of the current unit set (to decide whether a refit is due). */
  get pending(): number {
    return this.current ? this.current.added - this.current.fitted : 0;
  }

  /**
   * Solve, choose alpha, score, write the bundle. Undefined while the current unit set has fewer
   * than minFrames train frames. Frames may keep arriving meanwhile: the fit copies what it uses first.
   */
  async refit(): Promise<RefitResult | undefined> {
    const u = this.current;
    if (!u || u.stats.frames < this.o.minFrames) return undefined;
    const t0 = performance.now();
    this.gemm ??= await Gemm.create();
    const now = u.lastT;
    u.stats.forget(now);
    const added = u.added;
    await u.stats.flush(this.gemm);
    // Frames that came during the flush stay pending for the next refit.
    const frames = u.stats.frames - u.stats.pendingTerms;
    const held = this.heldOut(u, now);
    const solver = new StatisticsSolver(u.stats, this.o.scaling);
    u.fitted = added;
    const { ridge, path } = await chooseAlpha(this.gemm, solver, this.alphasFor(u), held);
    u.alpha = ridge.alpha;
    const { height: H, width: W } = this.o;
    const point: CurvePoint = { seconds: now - u.firstT, frames, heldOut: held.count, ssim: NaN, ssiml: NaN, mse: NaN };
    let graph: Graph = buildRidgeGraph(ridge.weights, ridge.bias, u.unitIds.length, H, W);
    if (held.count) {
      const decoded = await decodeHeldOut(this.gemm, ridge, held);
      const targets = heldOutTargets(ridge, held);
      Object.assign(point, heldOutScores(decoded, targets, held.count, H, W));
      if (this.o.refiner) {
        graph = composeRidgeRefiner({ weights: ridge.weights, bias: ridge.bias, neurons: u.unitIds.length }, this.o.refiner);
        const refined = await runGraph(graph, held, ridge.stdScale, H, W);
        const s = heldOutScores(refined, targets, held.count, H, W);
        point.refined = { ssim: s.ssim, ssiml: s.ssiml, mse: s.mse };
      }
    } else if (this.o.refiner) graph = composeRidgeRefiner({ weights: ridge.weights, bias: ridge.bias, neurons: u.unitIds.length }, this.o.refiner);
    u.curve.push(point);
    const fitSeconds = (performance.now() - t0) / 1000;
    const kind = this.o.refiner ? 'cnn' : 'ridge';
    const dir = join(this.o.modelsDir, this.o.name);
    const served = point.refined ?? point;
    if (this.o.write) writeTrainedBundle(dir, {
      name: this.o.name,
      kind,
      graph,
      docString: `cortexcast live-calibrated ${kind === 'cnn' ? 'ridge + transferred refiner' : 'ridge'} decoder: std-scaled responses -> z-scored image`,
      inputName: DECODER_INPUT,
      outputName: DECODER_OUTPUT,
      unitIds: u.unitIds,
      stdScale: ridge.stdScale,
      responseScaling: this.o.scaling,
      height: H,
      width: W,
      pixelMean: ridge.pixelMean,
      pixelStd: ridge.pixelStd,
      training: {
        dataset: 'live calibration',
        config: {
          decoder: kind === 'cnn' ? 'calibrated ridge + transferred refiner' : 'calibrated ridge',
          calibration: { unitSet: u.key, trainFrames: frames, heldOutFrames: held.count, heldOutFraction: this.o.heldOutFraction, forgetting: this.o.forgetting, refit: u.curve.length, chosenAlpha: ridge.alpha, lambda: ridge.lambda, path },
          ...(this.o.refiner ? { refiner: { animals: this.o.refiner.animals, steps: this.o.refiner.steps, config: this.o.refiner.config } } : {}),
          learningCurve: u.curve,
        },
        seconds: fitSeconds,
      },
      // Validation here is the held-out calibration images; the flattened keys show on /api/models.
      metrics: { validation: { ...(held.count ? { ssim: served.ssim, ssiml: served.ssiml, mse: served.mse } : {}), calibration_frames: frames, calibration_heldout: held.count, calibration_seconds: point.seconds, calibration_refits: u.curve.length } },
    });
    this.o.log?.(
      `calibrate: refit ${u.curve.length} (${u.unitIds.length} units, ${frames} frames, ${held.count} held out) alpha ${ridge.alpha} in ${fitSeconds.toFixed(2)} s` +
        (held.count ? `: held-out SSIM ${point.ssim.toFixed(3)}${point.refined ? `, with the refiner ${point.refined.ssim.toFixed(3)}` : ''}` : ''),
    );
    return { name: this.o.name, dir, kind, unitSet: u.key, neurons: u.unitIds.length, frames, point, alpha: ridge.alpha, fitSeconds, lastFrameT: now, ridge };
  }

  /**
   * Each tried alpha is a Cholesky factorisation: the first fit tries every other alpha of the grid
   * (its ends included), later fits the last choice and its two neighbours (the choice can still
   * move one step per refit).
   */
  private alphasFor(u: UnitSet): readonly number[] {
    const all = this.o.alphas;
    if (u.alpha === undefined) return all.filter((_, i) => i % 2 === 0 || i === all.length - 1);
    const k = all.indexOf(u.alpha);
    // The last choice last: it is the likeliest winner, whose factorisation the weights then reuse.
    return [all[k - 1], all[k + 1], u.alpha].filter((a): a is number => a !== undefined);
  }

  private heldOut(u: UnitSet, now: number): HeldOut {
    const kept = u.held.filter((h) => u.stats.relativeWeight(h.t, now) > 0.05);
    const N = u.unitIds.length;
    const P = this.o.height * this.o.width;
    const raw = new Float32Array(kept.length * N);
    const images = new Float32Array(kept.length * P);
    kept.forEach((h, i) => {
      raw.set(h.raw, i * N);
      images.set(h.image, i * P);
    });
    return { count: kept.length, raw, images };
  }
}

/** Decode held-out raw responses with a bundle graph (std scaling applied here, as the server does). */
export async function runGraph(graph: Graph, held: HeldOut, stdScale: Float32Array, height: number, width: number): Promise<Float32Array> {
  const N = stdScale.length;
  const x = Float32Array.from(held.raw, (v, k) => v * stdScale[k % N]);
  const { session } = await createSession(graph, { intraOpThreads: 1 });
  try {
    const out = await runOnce(session, { [DECODER_INPUT]: tensor('float32', [held.count, N], x) });
    const v = out[DECODER_OUTPUT].data as Float32Array;
    if (v.length !== held.count * height * width) throw ccError('CC_ERR_CALIBRATION', `decoder output of ${v.length} values for ${held.count} frames of ${height}x${width}`);
    return v;
  } finally {
    await session.release();
  }
}
