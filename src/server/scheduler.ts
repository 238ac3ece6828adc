import { applyResponseTransform } from '../models/bundle.js';
import type { ServerConfig } from './config.js';
import type { ServerMetrics } from './metrics.js';
import type { ModelRegistry, ServedModel } from './model-registry.js';

/**
 * Why a job ended without an image. Stream frames report these in DROPPED acks and in
 * `cortexcast_frames_dropped_total{reason}`; unary calls map them to gRPC statuses (UNARY_STATUS).
 */
export type DropReason =
  | 'superseded'
  | 'queue_full'
  | 'shutdown'
  | 'stream_closed'
  | 'model_unloaded'
  | 'no_workers'
  | 'model_changed'
  | 'decode_failed'
  | 'deadline'
  | 'cancelled';

export type DecodeOutcome =
  | { status: 'DECODED'; values: Float32Array; served: ServedModel; startMs: number; endMs: number }
  | { status: 'DROPPED'; reason: DropReason; detail: string };

/**
 * One unit of work from any source: a stream frame, a unary Decode call, or a whole batched
 * ModelInfer request. A unit is admitted whole or refused whole and runs in one worker run.
 */
export interface DecodeJob {
  model: string;
  /**
   * The responses as received (validated, not yet scaled), `rows` frames one after another.
   * Scaling happens at dispatch with the bundle that actually runs the batch, so a reload in
   * between never pairs one bundle's std scaling with another's weights.
   */
  raw: Float32Array;
  /** Frames in `raw` (default 1). A DECODED outcome's values hold as many images, in order. */
  rows?: number;
  /**
   * Unary calls: who is asking (a connection). Each caller has its own queue and callers are served
   * round-robin, so a client sending large batches cannot starve another's single Decode calls.
   */
  caller?: string;
  ingestedMs: number;
  /** How drop reasons name this job to others ('frame 17'). */
  label?: string;
  /** Called exactly once with the job's outcome. */
  settle: (o: DecodeOutcome) => void;
}

interface Source {
  key: string;
  jobs: QueuedJob[];
  /** Streams: one batch at a time keeps a stream's frames in order. Unary calls are independent. */
  ordered: boolean;
  inFlight: boolean;
  /** When it last gave a unit to a run (0: never); the least recently served goes first. */
  servedAt: number;
}

interface QueuedJob extends DecodeJob {
  timer?: NodeJS.Timeout;
  settled?: boolean;
  /** The queue it waits in (unary jobs: to remove it on cancel). */
  sourceKey?: string;
}

const UNARY = 'unary';
const rowsOf = (j: DecodeJob): number => j.rows ?? 1;

/**
 * The one scheduler every frame source goes through. Per model it keeps one small queue per stream
 * ('latest': only the newest undecoded frame; 'fifo': up to queueDepth) and one queue of unary
 * calls per caller, all unary queues of a model together bounded by limits.maxQueuedDecodes units
 * (a batched call is one unit). Work is dispatched when it arrives and whenever a worker frees up
 * or a pool is swapped (reload), never by polling: up to maxBatch rows per run (a larger unit runs
 * alone), at most one frame per stream, one unit per source per pass, the least recently served
 * source first (round-robin).
 * A model whose workers all died fails its waiters at once; unary jobs carry a deadline and can be
 * cancelled; draining refuses new work of every kind.
 */
export class DecodeScheduler {
  private queues = new Map<string, Map<string, Source>>();
  private running = 0;
  private runs = 0;
  private accepting = true;
  private onIdle?: () => void;
  /** Errors thrown by a job's settle callback (a bug, never a client's doing): logged, never fatal. */
  onSettleError: (e: unknown) => void = () => undefined;

  constructor(
    private readonly cfg: ServerConfig,
    private readonly registry: ModelRegistry,
    private readonly metrics: ServerMetrics,
  ) {}

  /** A stream frame. The frame policy may supersede older frames of the same stream. */
  submitFrame(streamId: string, job: DecodeJob): void {
    if (!this.accepting) return this.finish(job, { status: 'DROPPED', reason: 'shutdown', detail: 'server is shutting down' });
    const q = this.source(job.model, `stream:${streamId}`, true);
    const limit = this.cfg.framePolicy === 'latest' ? 1 : this.cfg.queueDepth;
    while (q.jobs.length >= limit) {
      const old = q.jobs.shift()!;
      if (this.cfg.framePolicy === 'latest') this.finish(old, { status: 'DROPPED', reason: 'superseded', detail: `superseded by ${job.label ?? 'a newer frame'}` });
      else this.finish(old, { status: 'DROPPED', reason: 'queue_full', detail: 'stream queue full' });
    }
    q.jobs.push(job);
    this.pump(job.model);
  }

  /**
   * A unary call. It fails with 'deadline' if no worker takes it within waitMs (the call's deadline
   * or the server's limits.maxDecodeWaitMs, whichever is sooner). Returns a cancel function for
   * when the client goes away or its deadline passes: a queued job is removed, a running one's
   * result is discarded.
   */
  submitUnary(job: DecodeJob, waitMs: number): (why: 'cancelled' | 'deadline') => void {
    const j: QueuedJob = job;
    if (!this.accepting) {
      this.finish(j, { status: 'DROPPED', reason: 'shutdown', detail: 'server is shutting down' });
      return () => undefined;
    }
    const queued = this.unaryQueued(job.model);
    if (queued >= this.cfg.limits.maxQueuedDecodes) {
      this.finish(j, { status: 'DROPPED', reason: 'queue_full', detail: `${queued} unary calls already wait for model ${job.model} (limits.maxQueuedDecodes)` });
      return () => undefined;
    }
    j.sourceKey = job.caller === undefined ? UNARY : `${UNARY}:${job.caller}`;
    const q = this.source(job.model, j.sourceKey, false);
    q.jobs.push(j);
    j.timer = setTimeout(() => this.remove(j, { status: 'DROPPED', reason: 'deadline', detail: `no inference worker was free within ${Math.round(waitMs)} ms` }), Math.max(0, waitMs));
    j.timer.unref();
    this.pump(job.model);
    return (why) => this.remove(j, { status: 'DROPPED', reason: why, detail: why === 'deadline' ? 'the call reached its deadline before a worker was free' : 'client cancelled the call' });
  }

  /** Forget a stream's queued frames (its call ended). */
  dropStream(streamId: string): void {
    for (const byStream of this.queues.values()) {
      const q = byStream.get(`stream:${streamId}`);
      if (!q) continue;
      for (const j of q.jobs.splice(0)) this.finish(j, { status: 'DROPPED', reason: 'stream_closed', detail: 'stream closed before decoding' });
      if (!q.inFlight) byStream.delete(`stream:${streamId}`);
    }
    this.checkIdle();
  }

  /** Unary units (calls) waiting for a model, over every caller. */
  private unaryQueued(model: string): number {
    let n = 0;
    for (const q of this.queues.get(model)?.values() ?? []) if (!q.ordered) n += q.jobs.length;
    return n;
  }

  queueDepth(model: string): number {
    let n = 0;
    for (const q of this.queues.get(model)?.values() ?? []) n += q.jobs.length;
    return n;
  }

  /** Something about a model's workers changed (a worker freed up or died, or a reload swapped the pool). */
  wake(model?: string): void {
    for (const m of model === undefined ? [...this.queues.keys()] : [model]) this.pump(m);
  }

  /**
   * Stop taking work of any kind; what is queued still runs. Resolves true when nothing is queued or
   * running, false at the deadline (what is still queued then is dropped with reason 'shutdown').
   */
  async drain(deadlineMs: number): Promise<boolean> {
    this.accepting = false;
    const idle = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), Math.max(0, deadlineMs));
      timer.unref();
      this.onIdle = () => {
        clearTimeout(timer);
        resolve(true);
      };
      this.checkIdle();
    });
    const drained = await idle;
    this.onIdle = undefined;
    for (const byStream of this.queues.values())
      for (const q of byStream.values()) for (const j of q.jobs.splice(0)) this.finish(j, { status: 'DROPPED', reason: 'shutdown', detail: 'server shut down before decoding' });
    return drained;
  }

  private source(model: string, key: string, ordered: boolean): Source {
    let byStream = this.queues.get(model);
    if (!byStream) this.queues.set(model, (byStream = new Map()));
    let q = byStream.get(key);
    if (!q) byStream.set(key, (q = { key, jobs: [], ordered, inFlight: false, servedAt: 0 }));
    return q;
  }

  private remove(j: QueuedJob, outcome: DecodeOutcome): void {
    if (j.settled) return;
    const byStream = this.queues.get(j.model);
    const q = byStream?.get(j.sourceKey ?? UNARY);
    const i = q?.jobs.indexOf(j) ?? -1;
    if (i < 0) return; // already running: its result will be discarded by the caller
    q!.jobs.splice(i, 1);
    if (!q!.jobs.length) byStream!.delete(q!.key);
    this.finish(j, outcome);
    this.checkIdle();
  }

  private finish(j: QueuedJob, outcome: DecodeOutcome): void {
    if (j.settled) return;
    j.settled = true;
    if (j.timer) clearTimeout(j.timer);
    try {
      j.settle(outcome);
    } catch (e) {
      this.onSettleError(e);
    }
  }

  private failAll(model: string, reason: DropReason, detail: string): void {
    for (const q of this.queues.get(model)?.values() ?? []) for (const j of q.jobs.splice(0)) this.finish(j, { status: 'DROPPED', reason, detail });
    this.checkIdle();
  }

  private pump(model: string): void {
    const byStream = this.queues.get(model);
    if (!byStream) return;
    if (!this.registry.has(model)) return this.failAll(model, 'model_unloaded', `model ${model} is not loaded`);
    const served = this.registry.get(model);
    if (served.pool.alive === 0) return this.failAll(model, 'no_workers', `model ${model} has no live inference worker (reload it)`);
    const max = this.cfg.maxBatch;
    while (served.pool.idle > 0) {
      const batch: QueuedJob[] = [];
      /** The sources that gave units to this run. */
      const used: Source[] = [];
      let rows = 0;
      // Round-robin: the least recently served source first (a caller that has just been served
      // waits behind every other waiting caller), one unit from each per pass until the run is full.
      const order = [...byStream.values()].sort((a, b) => a.servedAt - b.servedAt);
      const tick = ++this.runs;
      for (let progress = true; progress && rows < max; ) {
        progress = false;
        for (const q of order) {
          if (rows >= max) break;
          if (q.inFlight || q.jobs.length === 0 || (q.ordered && used.includes(q))) continue;
          const r = rowsOf(q.jobs[0]);
          // A unit never splits: one that does not fit waits for the next run, and one larger than
          // maxBatch runs alone (it comes first once its source is the least recently served).
          if (rows > 0 && rows + r > max) continue;
          batch.push(q.jobs.shift()!);
          rows += r;
          progress = true;
          q.servedAt = tick;
          if (!used.includes(q)) used.push(q);
        }
      }
      if (!batch.length) return;
      const runnable: QueuedJob[] = [];
      for (const j of batch) {
        if (j.timer) clearTimeout(j.timer);
        if (j.raw.length === rowsOf(j) * served.neurons) runnable.push(j);
        else this.finish(j, { status: 'DROPPED', reason: 'model_changed', detail: `model ${model} was reloaded and now expects ${served.neurons} neurons, the frame has ${j.raw.length / rowsOf(j)}` });
      }
      if (!runnable.length) continue;
      this.dispatch(model, served, runnable, used);
    }
  }

  private dispatch(model: string, served: ServedModel, batch: QueuedJob[], used: Source[]): void {
    const n = served.neurons;
    // Each unit's first row in the run.
    const offsets: number[] = [];
    let rows = 0;
    for (const j of batch) {
      offsets.push(rows);
      rows += rowsOf(j);
    }
    const input = new Float32Array(rows * n);
    const { stdScale } = served.bundle;
    const transform = served.bundle.manifest.input.transform;
    batch.forEach((j, i) => applyResponseTransform(j.raw, stdScale, transform, input.subarray(offsets[i] * n, (offsets[i] + rowsOf(j)) * n)));
    const run = served.pool.tryRun(input, rows)!;
    // A stream runs one batch at a time (its frames stay in order); unary calls are independent.
    for (const q of used) if (q.ordered) q.inFlight = true;
    this.running++;
    run
      .then((r) => {
        const P = served.width * served.height;
        this.metrics.decode.observe({ model, provider: served.provider }, (r.endMs - r.startMs) / 1000);
        this.metrics.batchSize.observe({ model }, rows);
        batch.forEach((j, i) => {
          this.metrics.queueWait.observe({ model }, Math.max(0, r.startMs - j.ingestedMs) / 1000);
          this.finish(j, { status: 'DECODED', values: r.output.subarray(offsets[i] * P, (offsets[i] + rowsOf(j)) * P), served, startMs: r.startMs, endMs: r.endMs });
        });
      })
      .catch((e: Error) => {
        const reason: DropReason = served.pool.isClosed ? 'model_unloaded' : 'decode_failed';
        for (const j of batch) this.finish(j, { status: 'DROPPED', reason, detail: `decode failed: ${e.message}` });
      })
      .finally(() => {
        const byStream = this.queues.get(model);
        for (const q of used) {
          q.inFlight = false;
          // Streams and callers come and go: an idle queue is recreated by its next frame or call.
          if (!q.jobs.length && byStream?.get(q.key) === q) byStream.delete(q.key);
        }
        this.running--;
        this.pump(model);
        this.checkIdle();
      });
  }

  private checkIdle(): void {
    if (!this.onIdle || this.running > 0) return;
    for (const byStream of this.queues.values()) for (const q of byStream.values()) if (q.jobs.length) return;
    this.onIdle();
  }
}
