import { parentPort, workerData } from 'node:worker_threads';
import type { Manifest } from '../models/bundle.js';
import { DecoderRunner } from '../models/decoder-runner.js';
import { createSession, type ExecutionProvider } from '../models/ort.js';

/**
 * One inference thread: onnxruntime-node's run() blocks the thread it runs on, so decodes live here
 * and ingest / fan-out never stall behind them. Protocol (postMessage, buffers transferred):
 *   in  { id, rows, input: Float32Array }          out { id, output: Float32Array, startMs, endMs }
 *   out { ready, provider, fallbacks } once, after a warm-up run; { id, error } on failure.
 */
export interface WorkerInit {
  model: Uint8Array;
  /** What the runner needs of the bundle's manifest (names, sizes, iterative spec). */
  manifest: Pick<Manifest, 'kind' | 'onnx' | 'input' | 'output' | 'iterative'>;
  /** Iterative decoders: steps per frame (default: the bundle's). */
  steps?: number;
  providers: ExecutionProvider[];
  threads: number;
}

export interface RunRequest {
  id: number;
  rows: number;
  input: Float32Array;
}

export type WorkerReply =
  | { kind: 'ready'; provider: ExecutionProvider; fallbacks: string[] }
  | { kind: 'done'; id: number; output: Float32Array; startMs: number; endMs: number }
  | { kind: 'error'; id: number; message: string };

const now = (): number => performance.timeOrigin + performance.now();

async function main(): Promise<void> {
  const init = workerData as WorkerInit;
  const port = parentPort!;
  const loaded = await createSession(init.model, { providers: init.providers, intraOpThreads: init.threads, spinning: false });
  const runner = new DecoderRunner(loaded.session, init.manifest);
  const neurons = init.manifest.input.neurons;
  // Warm-up: the first run allocates and, on GPUs, compiles kernels (one step is enough for iterative decoders).
  await runner.run(new Float32Array(neurons), 1, runner.iterative ? 1 : undefined);
  port.postMessage({ kind: 'ready', provider: loaded.provider, fallbacks: [...loaded.fallbacks] } satisfies WorkerReply);
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
