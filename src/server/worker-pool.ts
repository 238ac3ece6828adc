import { Worker } from 'node:worker_threads';
import type { ExecutionProvider } from '../models/ort.js';
import type { RunRequest, WorkerInit, WorkerReply } from './inference-worker.js';

export interface RunResult {
  output: Float32Array;
  startMs: number;
  endMs: number;
}

interface Slot {
  worker: Worker;
  busy: boolean;
  pending?: { id: number; resolve: (r: RunResult) => void; reject: (e: Error) => void };
}

/** The worker script: a tsx bootstrap when running from TypeScript sources, the .js file when built. */
function workerUrl(): URL {
  const ts = import.meta.url.endsWith('.ts');
  return new URL(ts ? './inference-worker-tsx.mjs' : './inference-worker.js', import.meta.url);
}

/**
 * A fixed set of inference threads for one model. `tryRun` hands a batch to an idle worker or
 * returns undefined when all are busy: the caller's frame policy decides what waits, so no queue
 * grows here.
 */
export class WorkerPool {
  private slots: Slot[] = [];
  private nextId = 1;
  provider: ExecutionProvider = 'cpu';
  fallbacks: string[] = [];
  private closed = false;

  private constructor(readonly size: number) {}

  static async start(init: WorkerInit, size: number): Promise<WorkerPool> {
    const pool = new WorkerPool(size);
    const url = workerUrl();
    const ready = await Promise.allSettled(
      Array.from({ length: size }, () => {
        const worker = new Worker(url, { workerData: init });
        const slot: Slot = { worker, busy: false };
        pool.slots.push(slot);
        return new Promise<void>((resolve, reject) => {
          const onFirst = (m: WorkerReply): void => {
            if (m.kind === 'ready') {
              pool.provider = m.provider;
              pool.fallbacks = m.fallbacks;
              worker.off('message', onFirst);
              worker.on('message', (r: WorkerReply) => pool.onReply(slot, r));
              resolve();
            } else if (m.kind === 'error') reject(new Error(m.message));
          };
          worker.on('message', onFirst);
          worker.on('error', (e) => {
            reject(e);
            pool.failSlot(slot, e);
          });
          worker.on('exit', (code) => {
            if (!pool.closed) pool.failSlot(slot, new Error(`inference worker exited with code ${code}`));
          });
        });
      }),
    );
    const failed = ready.find((r) => r.status === 'rejected');
    if (failed) {
      await pool.close();
      throw (failed as PromiseRejectedResult).reason;
    }
    return pool;
  }

  get idle(): number {
    return this.slots.filter((s) => !s.busy).length;
  }

  get busy(): number {
    return this.slots.length - this.idle;
  }

  /** Run on an idle worker (the input buffer is transferred), or undefined if none is idle. */
  tryRun(input: Float32Array, rows: number): Promise<RunResult> | undefined {
    if (this.closed) return undefined;
    const slot = this.slots.find((s) => !s.busy);
    if (!slot) return undefined;
    slot.busy = true;
    const id = this.nextId++;
    return new Promise<RunResult>((resolve, reject) => {
      slot.pending = { id, resolve, reject };
      slot.worker.postMessage({ id, rows, input } satisfies RunRequest, [input.buffer as ArrayBuffer]);
    });
  }

  private onReply(slot: Slot, r: WorkerReply): void {
    const p = slot.pending;
    if (!p || r.kind === 'ready' || r.id !== p.id) return;
    slot.pending = undefined;
    slot.busy = false;
    if (r.kind === 'done') p.resolve({ output: r.output, startMs: r.startMs, endMs: r.endMs });
    else p.reject(new Error(r.message));
  }

  private failSlot(slot: Slot, e: Error): void {
    slot.pending?.reject(e);
    slot.pending = undefined;
    slot.busy = true; // never reused
  }

  /** Wait for in-flight runs (up to deadlineMs), then terminate the threads. Safe to call twice. */
  async close(deadlineMs = 5000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const t0 = Date.now();
    while (this.slots.some((s) => s.pending) && Date.now() - t0 < deadlineMs) await new Promise((r) => setTimeout(r, 5));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
