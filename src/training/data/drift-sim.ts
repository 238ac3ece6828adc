import { Rng } from '../../models/rng.js';

/**
 * Recording drift over a session, applied to a simulated population's responses as a rig would see
 * them: every neuron's gain wanders (log-gain a random walk with `gainSdPerHour` standard deviation
 * after an hour; expression, bleaching and z-motion do this), and at `switchAt` seconds the ROI set
 * changes - `lostFraction` of the visible units disappear and the reserve units (cells the
 * segmentation had not found, simulated like the rest) appear with new unit ids.
 *
 * Unit ids: the visible units keep the dataset's ids; reserve units get `newIdOffset + id`.
 */
export interface DriftConfig {
  gainSdPerHour: number;
  /** Seconds between gain-walk steps. */
  stepSeconds: number;
  /** Seconds of recording at which ROIs are lost and found (Infinity: never). */
  switchAt: number;
  lostFraction: number;
  /** Units of the population held back until switchAt (the last ones of the dataset's order). */
  reserveUnits: number;
  newIdOffset: number;
  seed: number;
}

export const DEFAULT_DRIFT: DriftConfig = { gainSdPerHour: 0.5, stepSeconds: 10, switchAt: Infinity, lostFraction: 0.2, reserveUnits: 0, newIdOffset: 1_000_000, seed: 1 };

export interface DriftedFrame {
  responses: Float32Array;
  unitIds: number[];
}

export class DriftSimulator {
  private readonly logGain: Float32Array[] = [];
  private readonly before: number[];
  private readonly after: number[];

  /** `unitIds`: the dataset's ids, one per column of the responses the simulator is given. */
  constructor(
    readonly unitIds: readonly number[],
    readonly cfg: DriftConfig = DEFAULT_DRIFT,
  ) {
    const n = unitIds.length;
    if (cfg.reserveUnits < 0 || cfg.reserveUnits >= n) throw new RangeError(`drift: ${cfg.reserveUnits} reserve units of ${n}`);
    const visible = n - cfg.reserveUnits;
    const rng = new Rng(cfg.seed * 4099 + 1);
    const order = Array.from({ length: visible }, (_, i) => i);
    for (let i = visible - 1; i > 0; i--) {
      const j = Math.floor(rng.next() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    const lost = new Set(order.slice(0, Math.round(cfg.lostFraction * visible)));
    this.before = Array.from({ length: visible }, (_, i) => i);
    this.after = [...this.before.filter((i) => !lost.has(i)), ...Array.from({ length: cfg.reserveUnits }, (_, k) => visible + k)];
    this.logGain.push(new Float32Array(n));
  }

  /** Each unit's gain at time t (seconds): exp of a Gaussian random walk, deterministic in the seed. */
  gains(t: number): Float32Array {
    const step = Math.max(0, Math.floor(t / this.cfg.stepSeconds));
    const sd = this.cfg.gainSdPerHour * Math.sqrt(this.cfg.stepSeconds / 3600);
    while (this.logGain.length <= step) {
      const k = this.logGain.length;
      const rng = new Rng(this.cfg.seed * 7919 + k * 31 + 5);
      const prev = this.logGain[k - 1];
      this.logGain.push(Float32Array.from(prev, (v) => v + sd * rng.normal()));
    }
    return Float32Array.from(this.logGain[step], Math.exp);
  }

  /** The units visible at time t, as column indices of the population. */
  visible(t: number): readonly number[] {
    return t < this.cfg.switchAt ? this.before : this.after;
  }

  /** What the rig records at time t from the population's responses (all units, dataset order). */
  frame(population: Float32Array, t: number): DriftedFrame {
    const g = this.gains(t);
    const cols = this.visible(t);
    const visibleCount = this.unitIds.length - this.cfg.reserveUnits;
    return {
      responses: Float32Array.from(cols, (c) => population[c] * g[c]),
      unitIds: cols.map((c) => (c < visibleCount ? this.unitIds[c] : this.cfg.newIdOffset + this.unitIds[c])),
    };
  }
}
