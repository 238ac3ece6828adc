import { readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import type { Manifest } from '../models/bundle.js';
import { DecoderRunner } from '../models/decoder-runner.js';
import { createSession, type ExecutionProvider } from '../models/ort.js';

/**
 * One inference thread: onnxruntime-node's run() blocks the thread it runs on, so decodes live here
 * and ingest / fan-out never stall behind them. Protocol (postMessage, buffers transferred):
 *   in  { id, rows, input: Float32Array }          out { id, output: Float32Array, startMs, endMs }
 *   out { ready, provider, fallbacks, nice } once, after a warm-up run; { id, error } on failure.
 */
export interface WorkerInit {
  model: Uint8Array;
  /** What the runner needs of the bundle's manifest (names, sizes, iterative spec). */
  manifest: Pick<Manifest, 'kind' | 'onnx' | 'input' | 'output' | 'iterative'>;
  /** Iterative decoders: steps per frame (default: the bundle's). */
  steps?: number;
  providers: ExecutionProvider[];
  threads: number;
  /** Nice value added to this thread before ORT starts its own threads, which inherit it (0: none). */
  nice?: number;
}

export interface RunRequest {
  id: number;
  rows: number;
  input: Float32Array;
}

export type WorkerReply =
  | { kind: 'ready'; provider: ExecutionProvider; fallbacks: string[]; nice: NiceOutcome }
  | { kind: 'done'; id: number; output: Float32Array; startMs: number; endMs: number }
  | { kind: 'error'; id: number; message: string };

const now = (): number => performance.timeOrigin + performance.now();

/** The nice value this thread runs at, or why it could not be changed. */
export type NiceOutcome = { applied: number } | { failed: string };

/**
 * Lower this thread's priority. On Linux a nice value belongs to a thread (setpriority on a thread id),
 * and threads inherit it when created, so ORT's intra-op pool, made by createSession right after,
 * runs at the same value. Elsewhere there is no thread id to name and the priority stays.
 */
function lowerThreadPriority(increment: number): NiceOutcome {
  try {
    // /proc/thread-self -> "<pid>/task/<tid>"
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (!Number.isInteger(tid) || tid <= 0) return { failed: 'no thread id in /proc/thread-self' };
    const target = Math.min(19, getPriority(tid) + increment);
    setPriority(tid, target);
    return { applied: getPriority(tid) };
  } catch (e) {
    return { failed: (e as Error).message };
  }
}

async function main(): Promise<void> {
  const init = workerData as WorkerInit;
  const port = parentPort!;
  const nice: NiceOutcome = init.nice ? lowerThreadPriority(init.nice) : { applied: getPriority() };
  const loaded = await createSession(init.model, { providers: init.providers, intraOpThreads: init.threads, spinning: false });
  const runner = new DecoderRunner(loaded.session, init.manifest);
  const neurons = init.manifest.input.neurons;
  // Warm-up: the first run allocates and, on GPUs, compiles kernels (one step is enough for iterative decoders).
  await runner.run(new Float32Array(neurons), 1, runner.iterative ? 1 : undefined);
  port.postMessage({ kind: 'ready', provider: loaded.provider, fallbacks: [...loaded.fallbacks], nice } satisfies WorkerReply);
  port.on('message', (req: RunRequest) => {
    void (async () => {
      const startMs = now();
      try {
        const data = await runner.run(req.input, req.rows, init.steps);
        const output = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? data : data.slice();
        port.postMessage({ kind: 'done', id: req.id, output, startMs, endMs: now() } satisfies WorkerReply, [output.buffer as ArrayBuffer]);
      } catch (e) {
        port.postMessage({ kind: 'error', id: req.id, message: (e as Error).message } satisfies WorkerReply);
      }
    })();
  });
}

main().catch((e: unknown) => {
  parentPort?.postMessage({ kind: 'error', id: -1, message: `worker failed to start: ${(e as Error).message}` } satisfies WorkerReply);
});
