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

/** One frame's worth of work from any source (a stream frame or a unary Decode call). */
export interface DecodeJob {
  model: string;
  /**
   * The responses as received (validated, not yet scaled). Scaling happens at dispatch with the
   * bundle that actually runs the batch, so a reload in between never pairs one bundle's std
   * scaling with another's weights.
   */
  raw: Float32Array;
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
}

interface QueuedJob extends DecodeJob {
  timer?: NodeJS.Timeout;
  settled?: boolean;
}

const UNARY = 'unary';

/**
 * The one scheduler every frame source goes through. Per model it keeps one small queue per stream
 * ('latest': only the newest undecoded frame; 'fifo': up to queueDepth) and one bounded queue of
 * unary Decode calls. Work is dispatched when it arrives and whenever a worker frees up or a pool is
 * swapped (reload), never by polling: up to maxBatch jobs per run, at most one per stream, sources
 * taken round-robin. A model whose workers all died fails its waiters at once; unary jobs carry a
 * deadline and can be cancelled; draining refuses new work of every kind.
 */
export class DecodeScheduler {
  private queues = new Map<string, Map<string, Source>>();
  private running = 0;
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
    const q = this.source(job.model, UNARY, false);
    if (q.jobs.length >= this.cfg.limits.maxQueuedDecodes) {
      this.finish(j, { status: 'DROPPED', reason: 'queue_full', detail: `${q.jobs.length} Decode calls already wait for model ${job.model} (limits.maxQueuedDecodes)` });
      return () => undefined;
    }
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
    if (!q) byStream.set(key, (q = { key, jobs: [], ordered, inFlight: false }));
    return q;
  }

  private remove(j: QueuedJob, outcome: DecodeOutcome): void {
    if (j.settled) return;
    const q = this.queues.get(j.model)?.get(UNARY);
    const i = q?.jobs.indexOf(j) ?? -1;
    if (i < 0) return; // already running: its result will be discarded by the caller
    q!.jobs.splice(i, 1);
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
    while (served.pool.idle > 0) {
      const batch: QueuedJob[] = [];
      const taken: Source[] = [];
      // A snapshot: moving a source to the back must not bring it round again in the same batch.
      for (const [key, q] of [...byStream]) {
        if (batch.length >= this.cfg.maxBatch) break;
        if (q.inFlight || q.jobs.length === 0) continue;
        const n = q.ordered ? 1 : this.cfg.maxBatch - batch.length;
        batch.push(...q.jobs.splice(0, n));
        if (q.ordered) taken.push(q);
        // Round-robin: this source goes to the back.
        byStream.delete(key);
        byStream.set(key, q);
      }
      if (!batch.length) return;
      const runnable: QueuedJob[] = [];
      for (const j of batch) {
        if (j.timer) clearTimeout(j.timer);
        if (j.raw.length === served.neurons) runnable.push(j);
        else this.finish(j, { status: 'DROPPED', reason: 'model_changed', detail: `model ${model} was reloaded and now expects ${served.neurons} neurons, the frame has ${j.raw.length}` });
      }
      if (!runnable.length) continue;
      this.dispatch(model, served, runnable, taken);
    }
  }

  private dispatch(model: string, served: ServedModel, batch: QueuedJob[], taken: Source[]): void {
    const n = served.neurons;
    const input = new Float32Array(batch.length * n);
    const { stdScale } = served.bundle;
    const transform = served.bundle.manifest.input.transform;
    batch.forEach((j, i) => applyResponseTransform(j.raw, stdScale, transform, input.subarray(i * n, (i + 1) * n)));
    const run = served.pool.tryRun(input, batch.length)!;
    for (const q of taken) q.inFlight = true;
    this.running++;
    run
      .then((r) => {
        const P = served.width * served.height;
        this.metrics.decode.observe({ model, provider: served.provider }, (r.endMs - r.startMs) / 1000);
        this.metrics.batchSize.observe({ model }, batch.length);
        batch.forEach((j, i) => {
          this.metrics.queueWait.observe({ model }, Math.max(0, r.startMs - j.ingestedMs) / 1000);
          this.finish(j, { status: 'DECODED', values: r.output.subarray(i * P, (i + 1) * P), served, startMs: r.startMs, endMs: r.endMs });
        });
      })
      .catch((e: Error) => {
        const reason: DropReason = served.pool.isClosed ? 'model_unloaded' : 'decode_failed';
        for (const j of batch) this.finish(j, { status: 'DROPPED', reason, detail: `decode failed: ${e.message}` });
      })
      .finally(() => {
        const byStream = this.queues.get(model);
        for (const q of taken) {
          q.inFlight = false;
          // Streams come and go: an idle stream's queue is recreated by its next frame.
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
