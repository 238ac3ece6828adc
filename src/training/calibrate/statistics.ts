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
 */
export type Forgetting = { kind: 'none' } | { kind: 'window'; seconds: number } | { kind: 'decay'; seconds: number };

export class RidgeStatistics {
  /** Lower triangle (and diagonal) of sum w x x^T, row-major N x N; the upper triangle is not kept up to date. */
  readonly xx: Float64Array;
  readonly xy: Float64Array;
  readonly sx: Float64Array;
  readonly sy: Float64Array;
  /** Sum over frames of w * sum over pixels of y^2 (image std). */
  syy = 0;
  /** Sum of weights (frames, when nothing is forgotten). */
  weight = 0;
  /** Frames currently counted (window: those in the window). */
  frames = 0;
  private readonly kept: { raw: Float32Array; image: Float32Array; t: number }[] = [];
  private readonly pending: { raw: Float32Array; image: Float32Array; w: number }[] = [];
  private decayOrigin: number | undefined;

  constructor(
    readonly neurons: number,
    readonly pixels: number,
    readonly forgetting: Forgetting = { kind: 'none' },
  ) {
    this.xx = new Float64Array(neurons * neurons);
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
    for (let r = 0; r < b; r++) for (let i = 0; i < N; i++) this.sx[i] += xw[r * N + i];
    const xx = await gemm.mul(xw, x, N, b, N, true, false);
    for (let i = 0; i < N; i++) for (let j = 0; j <= i; j++) this.xx[i * N + j] += xx[i * N + j];
    const xy = await gemm.mul(xw, y, N, b, P, true, false);
    for (let k = 0; k < xy.length; k++) this.xy[k] += xy[k];
  }

  private rescale(f: number): void {
    for (const a of [this.xx, this.xy, this.sx, this.sy]) for (let i = 0; i < a.length; i++) a[i] *= f;
    for (const p of this.pending) p.w *= f;
    this.syy *= f;
    this.weight *= f;
  }
}
