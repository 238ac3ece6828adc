import { readlinkSync } from 'node:fs';
import { getPriority, setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { ccError } from '../common/errors.js';
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

/**
 * Decode `rows` rows as one run. Decoders take a batch dimension; a graph whose input has a fixed
 * batch of 1 is run row by row here, still as one unit of work for the scheduler. The output must
 * hold rows x H x W values (a manifest that disagrees with its graph would otherwise send short
 * images as DECODED).
 */
function batchedDecoder(runner: DecoderRunner, m: WorkerInit['manifest'], batchDim: unknown): (input: Float32Array, rows: number, steps?: number) => Promise<Float32Array> {
  const { neurons } = m.input;
  const pixels = m.output.height * m.output.width;
  if (typeof batchDim === 'number' && batchDim !== 1)
    throw ccError('CC_ERR_BUNDLE', m.onnx.file, `its input '${m.onnx.inputName}' has a fixed batch of ${batchDim}; decoders take a dynamic batch (or a batch of 1)`);
  const checked = (out: Float32Array, rows: number): Float32Array => {
    if (out.length !== rows * pixels)
      throw ccError('CC_ERR_BUNDLE', m.onnx.file, `the decoder gave ${out.length} values for ${rows} row(s); the manifest's ${m.output.height}x${m.output.width} image needs ${rows * pixels}`);
    return out;
  };
  if (batchDim !== 1) return async (input, rows, steps) => checked(await runner.run(input, rows, steps), rows);
  return async (input, rows, steps) => {
    const out = new Float32Array(rows * pixels);
    for (let r = 0; r < rows; r++) out.set(checked(await runner.run(input.subarray(r * neurons, (r + 1) * neurons), 1, steps), 1), r * pixels);
    return out;
  };
}

async function main(): Promise<void> {
  const init = workerData as WorkerInit;
  const port = parentPort!;
  const nice: NiceOutcome = init.nice ? lowerThreadPriority(init.nice) : { applied: getPriority() };
  const loaded = await createSession(init.model, { providers: init.providers, intraOpThreads: init.threads, spinning: false });
  const runner = new DecoderRunner(loaded.session, init.manifest);
  const inputMeta = loaded.session.inputMetadata.find((v) => v.name === init.manifest.onnx.inputName);
  const decode = batchedDecoder(runner, init.manifest, inputMeta?.isTensor ? inputMeta.shape[0] : undefined);
  const neurons = init.manifest.input.neurons;
  // Warm-up: the first run allocates and, on GPUs, compiles kernels (one step is enough for iterative
  // decoders); its output size is checked against the manifest before the model serves.
  await decode(new Float32Array(neurons), 1, runner.iterative ? 1 : undefined);
  port.postMessage({ kind: 'ready', provider: loaded.provider, fallbacks: [...loaded.fallbacks], nice } satisfies WorkerReply);
  port.on('message', (req: RunRequest) => {
    void (async () => {
      const startMs = now();
      try {
        const data = await decode(req.input, req.rows, init.steps);
        const output = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength ? data : data.slice();
        port.postMessage({ kind: 'done', id: req.id, output, startMs, endMs: now() } satisfies WorkerReply, [output.buffer as ArrayBuffer]);
      } catch (e) {
        port.postMessage({ kind: 'error', id: req.id, message: (e as Error).message } satisfies WorkerReply);
      }
    })();
  });
}

main().catch((e: unknown) => {
  const message = (e as Error).message;
  // A coded error (a bundle that cannot serve) keeps its code first, for the pool to pass on.
  parentPort?.postMessage({ kind: 'error', id: -1, message: message.startsWith('CC_ERR_') ? message : `worker failed to start: ${message}` } satisfies WorkerReply);
});
