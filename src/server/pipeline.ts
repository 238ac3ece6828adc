import type { ServerConfig } from './config.js';
import { now, toGrey, type DecodedFrame, type PendingFrame } from './frames.js';
import type { ServerMetrics } from './metrics.js';
import type { ModelRegistry } from './model-registry.js';

interface StreamQueue {
  frames: PendingFrame[];
  /** One batch per stream at a time keeps each stream's frames in order. */
  inFlight: boolean;
}

/**
 * Frame policy and dispatch. Each (model, stream) has a small queue: 'latest' keeps only the newest
 * undecoded frame (a superseded frame is dropped and counted), 'fifo' keeps up to queueDepth (the
 * oldest is dropped when full). Whenever a worker is idle, up to maxBatch frames - at most one per
 * stream, streams taken round-robin - are decoded together. Nothing grows without bound.
 */
export class DecodePipeline {
  private queues = new Map<string, Map<string, StreamQueue>>();
  private inFlight = 0;
  private accepting = true;

  constructor(
    private readonly cfg: ServerConfig,
    private readonly registry: ModelRegistry,
    private readonly metrics: ServerMetrics,
    private readonly publish: (f: DecodedFrame) => void,
  ) {}

  submit(f: PendingFrame): void {
    if (!this.accepting) {
      this.metrics.framesDropped.inc({ model: f.model, reason: 'shutdown' });
      f.settle({ status: 'DROPPED', reason: 'server is shutting down' });
      return;
    }
    let byStream = this.queues.get(f.model);
    if (!byStream) this.queues.set(f.model, (byStream = new Map()));
    let q = byStream.get(f.streamId);
    if (!q) byStream.set(f.streamId, (q = { frames: [], inFlight: false }));
    const limit = this.cfg.framePolicy === 'latest' ? 1 : this.cfg.queueDepth;
    while (q.frames.length >= limit) {
      const old = q.frames.shift()!;
      const reason = this.cfg.framePolicy === 'latest' ? 'superseded' : 'queue_full';
      this.metrics.framesDropped.inc({ model: old.model, reason });
      old.settle({ status: 'DROPPED', reason: reason === 'superseded' ? `superseded by frame ${f.sequence}` : 'stream queue full' });
    }
    q.frames.push(f);
    this.pump(f.model);
  }

  /** Forget a stream's queued frames (its client went away). */
  dropStream(streamId: string): void {
    for (const [model, byStream] of this.queues) {
      const q = byStream.get(streamId);
      if (!q) continue;
      for (const f of q.frames.splice(0)) {
        this.metrics.framesDropped.inc({ model, reason: 'stream_closed' });
        f.settle({ status: 'DROPPED', reason: 'stream closed before decoding' });
      }
      if (!q.inFlight) byStream.delete(streamId);
    }
  }

  queueDepth(model: string): number {
    let n = 0;
    for (const q of this.queues.get(model)?.values() ?? []) n += q.frames.length;
    return n;
  }

  private pump(model: string): void {
    const byStream = this.queues.get(model);
    if (!byStream || !this.registry.has(model)) return;
    const served = this.registry.get(model);
    while (served.pool.idle > 0) {
      const batch: PendingFrame[] = [];
      const taken: StreamQueue[] = [];
      for (const [sid, q] of byStream) {
        if (batch.length >= this.cfg.maxBatch) break;
        if (q.inFlight || q.frames.length === 0) continue;
        batch.push(q.frames.shift()!);
        taken.push(q);
        // Round-robin: move this stream to the back.
        byStream.delete(sid);
        byStream.set(sid, q);
      }
      if (!batch.length) return;
      const n = served.neurons;
      const input = new Float32Array(batch.length * n);
      batch.forEach((f, i) => input.set(f.input, i * n));
      const run = served.pool.tryRun(input, batch.length);
      if (!run) {
        batch.forEach((f, i) => taken[i].frames.unshift(f));
        return;
      }
      for (const q of taken) q.inFlight = true;
      this.inFlight++;
      run
        .then((r) => {
          const P = served.width * served.height;
          const decodeS = (r.endMs - r.startMs) / 1000;
          this.metrics.decode.observe({ model, provider: served.provider }, decodeS);
          this.metrics.batchSize.observe({ model }, batch.length);
          batch.forEach((f, i) => {
            const values = r.output.subarray(i * P, (i + 1) * P);
            this.metrics.queueWait.observe({ model }, Math.max(0, r.startMs - f.ingestedMs) / 1000);
            this.publish({
              streamId: f.streamId,
              model,
              sequence: f.sequence,
              imageId: f.imageId,
              stimulus: f.stimulus,
              acquiredMs: f.acquiredMs,
              ingestedMs: f.ingestedMs,
              decodeStartMs: r.startMs,
              decodeEndMs: r.endMs,
              provider: served.provider,
              width: served.width,
              height: served.height,
              pixels: toGrey(values, served.bundle),
              values,
            });
            this.metrics.framesDecoded.inc({ model });
            f.settle({ status: 'DECODED', decodeUs: Math.round(decodeS * 1e6), provider: served.provider });
          });
        })
        .catch((e: Error) => {
          for (const f of batch) {
            this.metrics.framesDropped.inc({ model, reason: 'model_unloaded' });
            f.settle({ status: 'DROPPED', reason: `decode failed: ${e.message}` });
          }
        })
        .finally(() => {
          for (const q of taken) q.inFlight = false;
          this.inFlight--;
          this.pump(model);
        });
    }
  }

  /** Stop taking frames; queued ones are still decoded. Resolves when nothing is queued or running, or at the deadline. */
  async drain(deadlineMs: number): Promise<boolean> {
    this.accepting = false;
    const t0 = now();
    const pending = (): number => this.inFlight + [...this.queues.keys()].reduce((n, m) => n + this.queueDepth(m), 0);
    while (pending() > 0 && now() - t0 < deadlineMs) await new Promise((r) => setTimeout(r, 5));
    const left = pending() === 0;
    for (const [model, byStream] of this.queues)
      for (const q of byStream.values())
        for (const f of q.frames.splice(0)) {
          this.metrics.framesDropped.inc({ model, reason: 'shutdown' });
          f.settle({ status: 'DROPPED', reason: 'server shut down before decoding' });
        }
    return left;
  }
}
