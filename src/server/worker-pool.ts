import { Worker } from 'node:worker_threads';
import { ccError, CortexcastError, ERRORS, type ErrorCode } from '../common/errors.js';
import type { ExecutionProvider } from '../models/ort.js';
import type { NiceOutcome, RunRequest, WorkerInit, WorkerReply } from './inference-worker.js';

export interface RunResult {
  output: Float32Array;
  startMs: number;
  endMs: number;
}

interface Slot {
  worker: Worker;
  /** dead: the thread exited or failed; it is never handed work again. */
  state: 'idle' | 'busy' | 'dead';
  pending?: { id: number; resolve: (r: RunResult) => void; reject: (e: Error) => void };
}

/** A worker's error message as an error; a coded one (CC_ERR_...) stays a CortexcastError with its code. */
function workerError(message: string): Error {
  const code = /^(CC_ERR_[A-Z_]+): /.exec(message)?.[1];
  return code && code in ERRORS ? new CortexcastError(code as ErrorCode, message) : new Error(message);
}

/** The worker script: a tsx bootstrap when running from TypeScript sources, the .js file when built. */
function workerUrl(): URL {
  const ts = import.meta.url.endsWith('.ts');
  return new URL(ts ? './inference-worker-tsx.mjs' : './inference-worker.js', import.meta.url);
}

/**
 * A fixed set of inference threads for one model. `tryRun` hands a batch to an idle worker or
 * returns undefined when none is idle: the scheduler decides what waits, so no queue grows here.
 * Every run's promise settles exactly once: with the output, with the worker's error, or rejected
 * when its thread dies or the pool closes. `onChange` fires whenever a worker becomes free or dies,
 * which is what the scheduler dispatches on (no polling).
 */
export class WorkerPool {
  private slots: Slot[] = [];
  private nextId = 1;
  provider: ExecutionProvider = 'cpu';
  fallbacks: string[] = [];
  /** The inference threads' nice value, or why it could not be set (the first worker's failure, if any worker failed). */
  nice: NiceOutcome = { applied: 0 };
  private closed = false;
  /** Set by the owner: a worker became idle or died. */
  onChange: () => void = () => undefined;
  /** Set by the owner: a worker died unexpectedly. */
  onWorkerDeath: (e: Error) => void = () => undefined;

  private constructor(readonly size: number) {}

  /** warmup: a worker not ready within ms fails the start (CC_ERR_WARMUP_TIMEOUT) and is terminated with the others. */
  static async start(init: WorkerInit, size: number, warmup?: { ms: number; model: string }): Promise<WorkerPool> {
    const pool = new WorkerPool(size);
    const url = workerUrl();
    const ready = await Promise.allSettled(
      Array.from({ length: size }, () => {
        const worker = new Worker(url, { workerData: init });
        const slot: Slot = { worker, state: 'busy' };
        pool.slots.push(slot);
        const started = new Promise<void>((resolve, reject) => {
          const onFirst = (m: WorkerReply): void => {
            if (m.kind === 'ready') {
              pool.provider = m.provider;
              pool.fallbacks = m.fallbacks;
              if (!('failed' in pool.nice)) pool.nice = m.nice;
              slot.state = 'idle';
              worker.off('message', onFirst);
              worker.on('message', (r: WorkerReply) => pool.onReply(slot, r));
              resolve();
            } else if (m.kind === 'error') reject(workerError(m.message));
          };
          worker.on('message', onFirst);
          worker.on('error', (e) => {
            reject(e);
            pool.failSlot(slot, e);
          });
          worker.on('exit', (code) => {
            reject(new Error(`inference worker exited with code ${code} while starting`));
            pool.failSlot(slot, new Error(`inference worker exited with code ${code}`));
          });
        });
        if (!warmup) return started;
        let timer: NodeJS.Timeout | undefined;
        const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(ccError('CC_ERR_WARMUP_TIMEOUT', warmup.model, warmup.ms)), warmup.ms)));
        return Promise.race([started, late]).finally(() => clearTimeout(timer));
      }),
    );
    const failed = ready.find((r) => r.status === 'rejected');
    if (failed) {
      await pool.close(0);
      throw (failed as PromiseRejectedResult).reason;
    }
    return pool;
  }

  get idle(): number {
    return this.closed ? 0 : this.slots.filter((s) => s.state === 'idle').length;
  }

  get busy(): number {
    return this.slots.filter((s) => s.state === 'busy').length;
  }

  /** Threads that can still run work (idle or busy). 0 means the model cannot decode until reloaded. */
  get alive(): number {
    return this.closed ? 0 : this.slots.filter((s) => s.state !== 'dead').length;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Run on an idle worker (the input buffer is transferred), or undefined if none is idle. */
  tryRun(input: Float32Array, rows: number): Promise<RunResult> | undefined {
    if (this.closed) return undefined;
    const slot = this.slots.find((s) => s.state === 'idle');
    if (!slot) return undefined;
    slot.state = 'busy';
    const id = this.nextId++;
    return new Promise<RunResult>((resolve, reject) => {
      slot.pending = { id, resolve, reject };
      slot.worker.postMessage({ id, rows, input } satisfies RunRequest, [input.buffer as ArrayBuffer]);
    });
  }

  /**
   * Stop one thread as if it had crashed (operators' and tests' way to exercise the dead-worker path
   * with real threads). Resolves once the pool has noticed.
   */
  async killWorker(index: number): Promise<void> {
    const slot = this.slots[index];
    if (!slot || slot.state === 'dead') return;
    await slot.worker.terminate();
  }

  private onReply(slot: Slot, r: WorkerReply): void {
    const p = slot.pending;
    if (!p || r.kind === 'ready' || r.id !== p.id) return;
    slot.pending = undefined;
    if (slot.state === 'busy') slot.state = 'idle';
    if (r.kind === 'done') p.resolve({ output: r.output, startMs: r.startMs, endMs: r.endMs });
    else p.reject(new Error(r.message));
    this.onChange();
  }

  private failSlot(slot: Slot, e: Error): void {
    if (slot.state === 'dead') return;
    const wasServing = !this.closed;
    slot.state = 'dead';
    const p = slot.pending;
    slot.pending = undefined;
    p?.reject(e);
    if (wasServing) {
      this.onWorkerDeath(e);
      this.onChange();
    }
  }

  /**
   * Wait for in-flight runs (up to deadlineMs), then terminate the threads; runs still pending then
   * are rejected, so no caller waits on a pool that is gone. Safe to call twice.
   */
  async close(deadlineMs = 5000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const running = this.slots.filter((s) => s.pending);
    if (running.length && deadlineMs > 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, deadlineMs);
        let left = running.length;
        for (const s of running) {
          const p = s.pending!;
          const done = (): void => {
            if (--left === 0) {
              clearTimeout(timer);
              resolve();
            }
          };
          s.pending = { id: p.id, resolve: (r) => (p.resolve(r), done()), reject: (e) => (p.reject(e), done()) };
        }
      });
    }
    for (const s of this.slots) this.failSlot(s, new Error('model unloaded'));
    await Promise.all(this.slots.map((s) => s.worker.terminate()));
  }
}
