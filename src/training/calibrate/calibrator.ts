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
import { composeRidgeRefiner, refinerOnlyGraph, type TransferRefiner } from './refiner.js';
import { chooseAlpha, decodeHeldOut, heldOutScores, heldOutTargets, solverFor, type AlphaChoice, type CalibratedRidge, type HeldOut } from './solve.js';
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
  /** 'carried': the fit on the units kept from the previous unit set with its calibration (others weigh 0). */
  source: 'own' | 'carried';
  /** 'primal' or 'sample' (see solve.ts). */
  form: 'primal' | 'sample';
}

type HeldFrame = { raw: Float32Array; image: Float32Array; t: number };

/**
 * The previous unit set's statistics restricted to the units the new set kept (`columns`: their
 * indices in the new set), still taking new frames: a decoder on the kept ROIs with all the earlier
 * calibration, served until the new set's own fit does better on its held-out frames.
 */
interface CarriedOver {
  columns: number[];
  stats: RidgeStatistics;
  /** Held-out frames of the earlier set, restricted to the kept units. */
  earlierHeld: HeldFrame[];
  alpha?: number;
  /** Refits in a row at which the new set's own fit did better (it takes over at OWN_WINS_NEEDED). */
  ownWins: number;
}

/** Held-out frames of the new unit set before its own fit is compared with the carried-over one. */
const HELD_TO_COMPARE = 20;
/** Consecutive better refits before the own fit replaces the carried one (one noisy comparison does not). */
const OWN_WINS_NEEDED = 2;

/** The statistics of one unit set (one day's ROIs); a different set of unit ids starts another. */
interface UnitSet {
  key: string;
  unitIds: number[];
  stats: RidgeStatistics;
  carried?: CarriedOver;
  held: HeldFrame[];
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
      const carried = u && this.carryOver(u, ids, f.t);
      if (u)
        this.o.log?.(
          `calibrate: the unit set changed (${u.unitIds.length} -> ${ids.length} units, ${key}); fitting a new decoder for it` +
            (carried ? `, serving the ${carried.columns.length} kept units with the earlier ${carried.stats.frames} frames until its own fit does better` : ''),
        );
      u = this.current = { key, unitIds: [...ids], stats: new RidgeStatistics(ids.length, this.o.height * this.o.width, this.o.forgetting), carried, held: [], curve: [], firstT: f.t, lastT: f.t, added: 0, fitted: 0 };
    }
    u.lastT = Math.max(u.lastT, f.t);
    u.added++;
    const keptRaw = u.carried && Float32Array.from(u.carried.columns, (c) => f.raw[c]);
    if (isHeldOut(f.imageId, this.o.heldOutFraction)) {
      u.held.push({ raw: f.raw, image: f.image, t: f.t });
      if (u.held.length > this.o.maxHeldOut) u.held.shift();
      return 'held-out';
    }
    u.stats.add(f.raw, f.image, f.t);
    if (u.carried) u.carried.stats.add(keptRaw!, f.image, f.t);
    return 'train';
  }

  /** The earlier set's statistics on the units a new set kept (none when it kept none or had too few frames). */
  private carryOver(u: UnitSet, ids: readonly number[], t: number): CarriedOver | undefined {
    const earlier = new Map(u.unitIds.map((id, i) => [id, i]));
    const columns: number[] = [];
    const earlierColumns: number[] = [];
    ids.forEach((id, k) => {
      const i = earlier.get(id);
      if (i !== undefined) (columns.push(k), earlierColumns.push(i));
    });
    // A carried fit on fewer than half of the new units would not be worth its refit time.
    if (columns.length < Math.max(1, ids.length / 2) || u.stats.frames < this.o.minFrames) return undefined;
    // What the forgetting still keeps of the earlier frames at the new set's first frame (a new day: often nothing).
    const stats = u.stats.restricted(earlierColumns);
    stats.forget(t);
    const kept = this.o.forgetting.kind === 'decay' ? stats.frames * stats.relativeWeight(u.lastT, t) : stats.frames;
    if (kept < this.o.minFrames) return undefined;
    const pick = (raw: Float32Array): Float32Array => Float32Array.from(earlierColumns, (c) => raw[c]);
    return { columns, stats, earlierHeld: u.held.map((h) => ({ ...h, raw: pick(h.raw) })), alpha: u.alpha, ownWins: 0 };
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
    if (!u || (u.stats.frames < this.o.minFrames && !u.carried)) return undefined;
    const t0 = performance.now();
    this.gemm ??= await Gemm.create();
    const now = u.lastT;
    const added = u.added;
    const own = u.stats.frames >= this.o.minFrames ? await this.fitStatistics(u.stats, this.heldOut(u, now), u.alpha, now) : undefined;
    type Fitted = NonNullable<typeof own> & { source: 'own' | 'carried' };
    let fitted: Fitted | undefined = own && { ...own, source: 'own' };
    if (u.carried) {
      u.carried.stats.forget(now);
      // Forgetting can empty the carried statistics (a window shorter than the pause since the earlier frames).
      if (u.carried.stats.frames < this.o.minFrames) {
        this.o.log?.(`calibrate: the carried-over calibration has fewer than ${this.o.minFrames} frames left in the window; the new unit set's own fit takes over`);
        u.carried = undefined;
      }
    }
    if (u.carried) {
      const c = u.carried;
      const held = this.heldOut(u, now, c);
      const carried = await this.fitStatistics(c.stats, held, c.alpha, now);
      c.alpha = carried.choice.ridge.alpha;
      // The choice is made on the new set's own held-out frames; with too few of them, the carried fit (more data) serves.
      const newHeld = this.heldOut(u, now);
      const compare = newHeld.count >= HELD_TO_COMPARE && own;
      let ownWins = false;
      if (compare) {
        const keptHeld = { count: newHeld.count, raw: pickColumns(newHeld.raw, u.unitIds.length, c.columns), images: newHeld.images };
        // In grey levels: the two fits z-score pixels with their own statistics.
        const mse = async (r: CalibratedRidge, h: HeldOut): Promise<number> => {
          const d = await decodeHeldOut(this.gemm!, r, h);
          const t = heldOutTargets(r, h);
          return (d.reduce((a, v, k) => a + (v - t[k]) ** 2, 0) / d.length) * r.pixelStd ** 2;
        };
        c.ownWins = (await mse(own.choice.ridge, newHeld)) <= (await mse(carried.choice.ridge, keptHeld)) ? c.ownWins + 1 : 0;
        ownWins = c.ownWins >= OWN_WINS_NEEDED;
      }
      if (ownWins) {
        this.o.log?.(`calibrate: the new unit set's own fit (${own!.frames} frames) now beats the carried-over one on its held-out frames (${OWN_WINS_NEEDED} refits in a row); the earlier calibration is dropped`);
        u.carried = undefined;
      } else fitted = { ...carried, choice: { ...carried.choice, ridge: padRidge(carried.choice.ridge, c.columns, u.unitIds.length) }, held: { ...held, raw: padColumns(held.raw, held.count, c.columns, u.unitIds.length) }, source: 'carried' };
    }
    if (!fitted) return undefined;
    if (own) u.alpha = own.choice.ridge.alpha;
    u.fitted = added;
    const { choice, held, frames, form } = fitted;
    const { ridge, path } = choice;
    const { height: H, width: W } = this.o;
    const point: CurvePoint = { seconds: now - u.firstT, frames, heldOut: held.count, ssim: NaN, ssiml: NaN, mse: NaN };
    let graph: Graph = buildRidgeGraph(ridge.weights, ridge.bias, u.unitIds.length, H, W);
    if (held.count) {
      const decoded = await decodeHeldOut(this.gemm, ridge, held);
      const targets = heldOutTargets(ridge, held);
      Object.assign(point, heldOutScores(decoded, targets, held.count, H, W));
      if (this.o.refiner) {
        graph = composeRidgeRefiner({ weights: ridge.weights, bias: ridge.bias, neurons: u.unitIds.length }, this.o.refiner);
        // The refiner alone on the ridge decodes above: the same numbers as the composed graph, without
        // building a session around its neurons x pixels weights.
        const refined = await this.refine(decoded, held.count);
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
    return { name: this.o.name, dir, kind, unitSet: u.key, neurons: u.unitIds.length, frames, point, alpha: ridge.alpha, fitSeconds, lastFrameT: now, ridge, source: fitted.source, form };
  }

  private refinerSession?: Promise<Awaited<ReturnType<typeof createSession>>['session']>;

  /** The transferred refiner on ridge images [count, pixels] (z-scored). */
  private async refine(ridgeImages: Float32Array, count: number): Promise<Float32Array> {
    this.refinerSession ??= createSession(refinerOnlyGraph(this.o.refiner!), { intraOpThreads: 1 }).then((c) => c.session);
    const out = await runOnce(await this.refinerSession, { ridge_image: tensor('float32', [count, 1, this.o.height, this.o.width], ridgeImages) });
    return out.image.data as Float32Array;
  }

  /** Forget, flush, solve and choose alpha on `held` for one set of statistics. */
  private async fitStatistics(stats: RidgeStatistics, held: HeldOut, lastAlpha: number | undefined, now: number): Promise<{ choice: AlphaChoice; held: HeldOut; frames: number; form: 'primal' | 'sample' }> {
    stats.forget(now);
    await stats.flush(this.gemm!);
    // Frames that came during the flush stay pending for the next refit.
    const frames = stats.frames - stats.pendingTerms;
    const solver = await solverFor(this.gemm!, stats, this.o.scaling);
    const choice = await chooseAlpha(this.gemm!, solver, this.alphasFor(lastAlpha), held);
    return { choice, held, frames, form: solver.form };
  }

  /**
   * Each tried alpha is a Cholesky factorisation: the first fit tries every other alpha of the grid
   * (its ends included), later fits the last choice and its two neighbours (the choice can still
   * move one step per refit).
   */
  private alphasFor(last: number | undefined): readonly number[] {
    const all = this.o.alphas;
    if (last === undefined) return all.filter((_, i) => i % 2 === 0 || i === all.length - 1);
    const k = all.indexOf(last);
    // The last choice last: it is the likeliest winner, whose factorisation the weights then reuse.
    return [all[k - 1], all[k + 1], last].filter((a): a is number => a !== undefined);
  }

  /** The held-out frames still weighed by the forgetting; with `carried`, the earlier set's and the new set's on the kept units. */
  private heldOut(u: UnitSet, now: number, carried?: CarriedOver): HeldOut {
    const pick = (raw: Float32Array): Float32Array => Float32Array.from(carried!.columns, (c) => raw[c]);
    const frames = carried ? [...carried.earlierHeld, ...u.held.map((h) => ({ ...h, raw: pick(h.raw) }))].slice(-this.o.maxHeldOut) : u.held;
    const kept = frames.filter((h) => u.stats.relativeWeight(h.t, now) > 0.05);
    const N = carried ? carried.columns.length : u.unitIds.length;
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

/** Columns `columns` of a [rows, width] matrix. */
function pickColumns(m: Float32Array, width: number, columns: readonly number[]): Float32Array {
  const rows = m.length / width;
  const out = new Float32Array(rows * columns.length);
  for (let r = 0; r < rows; r++) columns.forEach((c, k) => (out[r * columns.length + k] = m[r * width + c]));
  return out;
}

/** A [rows, columns.length] matrix placed into columns `columns` of a zero [rows, width] one. */
function padColumns(m: Float32Array, rows: number, columns: readonly number[], width: number): Float32Array {
  const out = new Float32Array(rows * width);
  for (let r = 0; r < rows; r++) columns.forEach((c, k) => (out[r * width + c] = m[r * columns.length + k]));
  return out;
}

/** A fit on the kept units as a decoder of the whole unit set: the other units weigh 0 (scale 1). */
function padRidge(r: CalibratedRidge, columns: readonly number[], neurons: number): CalibratedRidge {
  const P = r.bias.length;
  const weights = new Float32Array(neurons * P);
  columns.forEach((c, k) => weights.set(r.weights.subarray(k * P, (k + 1) * P), c * P));
  const stdScale = new Float32Array(neurons).fill(1);
  columns.forEach((c, k) => (stdScale[c] = r.stdScale[k]));
  return { ...r, weights, stdScale };
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
