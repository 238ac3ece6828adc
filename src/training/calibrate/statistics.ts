import type { Gemm } from '../engine/linalg.js';

/**
 * The ridge decoder's sufficient statistics, kept up to date one frame at a time: weighted sums of
 * raw responses x, their outer products x x^T, the cross products x y^T with the (resized, not yet
 * z-scored) stimulus y, and the pixel sums the image z-scoring needs. Everything a batch fit computes
 * from the data - the per-neuron std scaling, the image mean and std, the centred scaled Gram matrix
 * and cross-covariance - follows from these sums (solve.ts), so a refit never revisits old frames.
 *
 * Forgetting (drift): `window` subtracts a frame's terms again once it is older than the window
 * (the frames in the window are kept for that); `decay` weights a frame by exp(-age / tau), kept as
 * growing weights for new frames (a ridge fit is unchanged when every weight is scaled alike), with
 * the sums rescaled before the weights overflow. Frames are queued by `add` and folded into the sums
 * by `flush`, in one batch (the solver reads flushed sums only).
 *
 * While no more frames are in the sums than there are neurons, the frames themselves are kept too
 * (`rows`, with their weights): the solver then works in sample space, where a refit costs
 * frames^2 x neurons instead of neurons^3 - what makes refits at thousands of neurons take seconds.
 * Meanwhile the neurons x neurons sums are not kept up to date (at 8,600 neurons, folding a batch
 * into them costs more than the whole sample-space refit): `ensureGram` brings them up to date from
 * the kept frames when the neurons' space takes over, or when asked.
 * A unit set that changes (ROIs lost) carries its sums over to the units it keeps (`restricted`).
 */
export type Forgetting = { kind: 'none' } | { kind: 'window'; seconds: number } | { kind: 'decay'; seconds: number };

/** A frame as it is in the sums: raw responses, stimulus and weight. */
export interface StatisticsRow {
  raw: Float32Array;
  image: Float32Array;
  w: number;
}

export class RidgeStatistics {
  /**
   * Lower triangle (and diagonal) of sum w x x^T, row-major N x N; the upper triangle is not kept up
   * to date, and none of it while `gramCurrent` is false (the diagonal is in `xxDiagonal`).
   */
  readonly xx: Float64Array;
  /** Whether xx holds every flushed frame. */
  gramCurrent = false;
  /** The diagonal of sum w x x^T (always current): the per-neuron std. */
  readonly xxDiagonal: Float64Array;
  readonly xy: Float64Array;
  readonly sx: Float64Array;
  readonly sy: Float64Array;
  /** Sum over frames of w * sum over pixels of y^2 (image std). */
  syy = 0;
  /** Sum of weights (frames, when nothing is forgotten). */
  weight = 0;
  /** Frames currently counted (window: those in the window). */
  frames = 0;
  private kept: { raw: Float32Array; image: Float32Array; t: number }[] = [];
  private pending: StatisticsRow[] = [];
  private decayOrigin: number | undefined;
  /**
   * The frames in the sums, oldest first, while there are at most `neurons` of them (window: while
   * the window holds at most that many); undefined once more have been summed without forgetting.
   */
  private summedRows: StatisticsRow[] | undefined = [];

  constructor(
    readonly neurons: number,
    readonly pixels: number,
    readonly forgetting: Forgetting = { kind: 'none' },
  ) {
    this.xx = new Float64Array(neurons * neurons);
    this.xxDiagonal = new Float64Array(neurons);
    this.xy = new Float64Array(neurons * pixels);
    this.sx = new Float64Array(neurons);
    this.sy = new Float64Array(pixels);
  }

  /** A frame at time t (seconds): raw responses [neurons] and its stimulus [pixels]. */
  add(raw: Float32Array, image: Float32Array, t: number): void {
    if (raw.length !== this.neurons || image.length !== this.pixels) throw new RangeError(`calibration frame of ${raw.length} responses and ${image.length} pixels; the statistics hold ${this.neurons} and ${this.pixels}`);
    let w = 1;
    if (this.forgetting.kind === 'decay') {
      this.decayOrigin ??= t;
      w = Math.exp((t - this.decayOrigin) / this.forgetting.seconds);
      if (w > 1e100) {
        this.rescale(1 / w);
        this.decayOrigin = t;
        w = 1;
      }
    }
    this.accumulate(raw, image, w);
    this.frames++;
    if (this.forgetting.kind === 'window') {
      this.kept.push({ raw, image, t });
      this.forget(t);
    }
  }

  /** Window: drop the terms of frames older than the window at time `now`. */
  forget(now: number): void {
    if (this.forgetting.kind !== 'window') return;
    const oldest = now - this.forgetting.seconds;
    while (this.kept.length && this.kept[0].t < oldest) {
      const f = this.kept.shift()!;
      this.accumulate(f.raw, f.image, -1);
      this.frames--;
    }
  }

  /** Effective weight of a frame seen at time t, relative to one seen now (decay; 1 otherwise). */
  relativeWeight(t: number, now: number): number {
    if (this.forgetting.kind === 'decay') return Math.exp(-(now - t) / this.forgetting.seconds);
    if (this.forgetting.kind === 'window') return t >= now - this.forgetting.seconds ? 1 : 0;
    return 1;
  }

  /** Terms not yet in the sums (added and forgotten frames with their weights), folded in by flush(). */
  get pendingTerms(): number {
    return this.pending.length;
  }

  private accumulate(raw: Float32Array, image: Float32Array, w: number): void {
    this.pending.push({ raw, image, w });
  }

  /**
   * Fold the pending terms into the sums: the outer products as two GEMMs over the batch (ONNX
   * Runtime), added into float64 sums. Frames arrive a few per second and refits read the sums, so
   * batching them costs no latency and is an order of magnitude cheaper than a rank-1 update each.
   */
  async flush(gemm: Gemm): Promise<void> {
    const batch = this.pending.splice(0);
    if (!batch.length) return;
    const N = this.neurons;
    const P = this.pixels;
    const b = batch.length;
    const xw = new Float32Array(b * N);
    const x = new Float32Array(b * N);
    const y = new Float32Array(b * P);
    batch.forEach((f, r) => {
      x.set(f.raw, r * N);
      y.set(f.image, r * P);
      for (let i = 0; i < N; i++) xw[r * N + i] = f.raw[i] * f.w;
      let s2 = 0;
      for (let p = 0; p < P; p++) {
        this.sy[p] += f.w * f.image[p];
        s2 += f.image[p] * f.image[p];
      }
      this.syy += f.w * s2;
      this.weight += f.w;
    });
    for (let r = 0; r < b; r++)
      for (let i = 0; i < N; i++) {
        this.sx[i] += xw[r * N + i];
        this.xxDiagonal[i] += xw[r * N + i] * x[r * N + i];
      }
    if (this.gramCurrent) await this.addGram(gemm, xw, x, b);
    for (const f of batch) this.trackRow(f);
    // The kept frames are about to be dropped (no forgetting, more frames than neurons) or no longer
    // make a sample-space solve (a window holding more frames than neurons): the sums take over.
    if (!this.gramCurrent && !this.rows) await this.gramFromRows(gemm);
    const xy = await gemm.mul(xw, y, N, b, P, true, false);
    for (let k = 0; k < xy.length; k++) this.xy[k] += xy[k];
    if (this.summedRows && this.summedRows.length > this.neurons && this.forgetting.kind !== 'window') this.summedRows = undefined;
  }

  /** Bring xx up to date (the neurons' space solve needs it). */
  async ensureGram(gemm: Gemm): Promise<void> {
    if (this.gramCurrent) return;
    if (this.pending.length) return this.flush(gemm).then(() => this.ensureGram(gemm));
    await this.gramFromRows(gemm);
    if (this.summedRows && this.summedRows.length > this.neurons && this.forgetting.kind !== 'window') this.summedRows = undefined;
  }

  private async addGram(gemm: Gemm, xw: Float32Array, x: Float32Array, b: number): Promise<void> {
    const N = this.neurons;
    const xx = await gemm.mul(xw, x, N, b, N, true, false);
    for (let i = 0; i < N; i++) for (let j = 0; j <= i; j++) this.xx[i * N + j] += xx[i * N + j];
  }

  /** xx from the kept frames, in batches (they are every frame in the sums while xx is not current). */
  private async gramFromRows(gemm: Gemm): Promise<void> {
    const rows = this.summedRows!;
    const N = this.neurons;
    this.xx.fill(0);
    for (let r0 = 0; r0 < rows.length; r0 += 512) {
      const part = rows.slice(r0, r0 + 512);
      const x = new Float32Array(part.length * N);
      const xw = new Float32Array(part.length * N);
      part.forEach((f, r) => {
        x.set(f.raw, r * N);
        for (let i = 0; i < N; i++) xw[r * N + i] = f.raw[i] * f.w;
      });
      await this.addGram(gemm, xw, x, part.length);
    }
    this.gramCurrent = true;
  }

  /**
   * The frames in the flushed sums, when there are fewer than neurons (the sample-space solve's
   * data); undefined otherwise.
   */
  get rows(): readonly StatisticsRow[] | undefined {
    return this.summedRows && this.summedRows.length < this.neurons ? this.summedRows : undefined;
  }

  /** A forgotten frame (negative weight) leaves the rows from the front: windows forget oldest first. */
  private trackRow(f: StatisticsRow): void {
    if (f.w < 0) {
      this.summedRows?.shift();
      return;
    }
    // Without forgetting the rows only grow: past the neuron count flush() drops them, for good.
    this.summedRows?.push(f);
  }

  /**
   * The statistics of a subset of the units (`columns`: indices into this set's units, in the new
   * order), pending and kept frames included: exact sums for the units an ROI change kept.
   */
  restricted(columns: readonly number[]): RidgeStatistics {
    const N = this.neurons;
    const M = columns.length;
    const P = this.pixels;
    for (const c of columns) if (!(Number.isInteger(c) && c >= 0 && c < N)) throw new RangeError(`unit column ${c} is outside 0..${N - 1}`);
    const r = new RidgeStatistics(M, P, this.forgetting);
    for (let a = 0; a < M; a++) {
      for (let b = 0; b <= a; b++) {
        const [i, j] = columns[a] >= columns[b] ? [columns[a], columns[b]] : [columns[b], columns[a]];
        r.xx[a * M + b] = this.xx[i * N + j];
      }
      r.xy.set(this.xy.subarray(columns[a] * P, (columns[a] + 1) * P), a * P);
      r.sx[a] = this.sx[columns[a]];
    }
    r.gramCurrent = this.gramCurrent;
    columns.forEach((c, a) => (r.xxDiagonal[a] = this.xxDiagonal[c]));
    r.sy.set(this.sy);
    r.syy = this.syy;
    r.weight = this.weight;
    r.frames = this.frames;
    r.decayOrigin = this.decayOrigin;
    const pick = (raw: Float32Array): Float32Array => Float32Array.from(columns, (c) => raw[c]);
    r.kept = this.kept.map((k) => ({ ...k, raw: pick(k.raw) }));
    r.pending = this.pending.map((p) => ({ ...p, raw: pick(p.raw) }));
    r.summedRows = this.summedRows?.map((p) => ({ ...p, raw: pick(p.raw) }));
    // Past the kept units' count the rows go, but only once xx holds them (the next flush or ensureGram builds it).
    if (r.summedRows && r.summedRows.length > M && this.forgetting.kind !== 'window' && r.gramCurrent) r.summedRows = undefined;
    return r;
  }

  private rescale(f: number): void {
    for (const a of [this.xx, this.xxDiagonal, this.xy, this.sx, this.sy]) for (let i = 0; i < a.length; i++) a[i] *= f;
    for (const p of this.pending) p.w *= f;
    for (const p of this.summedRows ?? []) p.w *= f;
    this.syy *= f;
    this.weight *= f;
  }
}
