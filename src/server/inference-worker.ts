import { parentPort, workerData } from 'node:worker_threads';
import ort from 'onnxruntime-node';
import { createSession, type ExecutionProvider } from '../models/ort.js';

/**
 * One inference thread: onnxruntime-node's run() blocks the thread it runs on, so decodes live here
 * and ingest / fan-out never stall behind them. Protocol (postMessage, buffers transferred):
 *   in  { id, rows, input: Float32Array }          out { id, output: Float32Array, startMs, endMs }
 *   out { ready, provider, fallbacks } once, after a warm-up run; { id, error } on failure.
 */
export interface WorkerInit {
  model: Uint8Array;
  inputName: string;
  outputName: string;
  neurons: number;
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
  const session = loaded.session;
  // Warm-up: the first run allocates and, on GPUs, compiles kernels.
  await session.run({ [init.inputName]: new ort.Tensor('float32', new Float32Array(init.neurons), [1, init.neurons]) });
  port.postMessage({ kind: 'ready', provider: loaded.provider, fallbacks: [...loaded.fallbacks] } satisfies WorkerReply);
  port.on('message', (req: RunRequest) => {
    void (async () => {
      const startMs = now();
      try {
        const out = await session.run({ [init.inputName]: new ort.Tensor('float32', req.input, [req.rows, init.neurons]) });
        const data = out[init.outputName].data as Float32Array;
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
