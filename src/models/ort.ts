import ort from 'onnxruntime-node';
import { ccError } from '../common/errors.js';
import { writeModel } from './onnx/serialize.js';
import type { Graph } from './onnx/graph.js';
import type { TensorData, TypedArray } from './onnx/tensor.js';

export type ExecutionProvider = 'cuda' | 'webgpu' | 'cpu';

export interface SessionOptions {
  /** Tried in order; an absent provider throws in ORT, so we fall back and report which served. */
  providers?: readonly ExecutionProvider[];
  /** ORT's default behaved like one thread on 2 cores; always set it. */
  intraOpThreads?: number;
  graphOptimization?: 'disabled' | 'basic' | 'extended' | 'all';
  /**
   * ORT's CPU arena rounds large allocations up and never returns memory; training graphs with
   * gigabyte-sized parameters run leaner without it.
   */
  cpuArena?: boolean;
  /**
   * Let ORT's intra-op threads spin between runs (its default). Off for live serving: spinning threads
   * compete with the event loop for the same cores between frames.
   */
  spinning?: boolean;
  /** Write ORT's per-node profile (Chrome trace JSON) to files starting with this prefix. */
  profilePrefix?: string;
}

export interface LoadedSession {
  readonly session: ort.InferenceSession;
  readonly provider: ExecutionProvider;
  /** Why each earlier provider in the list was skipped. */
  readonly fallbacks: readonly string[];
}

export const defaultThreads = (): number => {
  const fromEnv = Number(process.env.CORTEXCAST_THREADS);
  if (Number.isInteger(fromEnv) && fromEnv > 0) return fromEnv;
  return Math.max(1, (globalThis.navigator?.hardwareConcurrency as number | undefined) ?? 2);
};

/** Create an ORT session from ONNX bytes, a file path or a Graph, falling back across providers. */
export async function createSession(model: Uint8Array | string | Graph, opts: SessionOptions = {}): Promise<LoadedSession> {
  const source = typeof model === 'string' || model instanceof Uint8Array ? model : writeModel(model);
  const providers = opts.providers ?? ['cpu'];
  const fallbacks: string[] = [];
  for (const provider of providers) {
    try {
      const options: ort.InferenceSession.SessionOptions = {
        executionProviders: [provider],
        intraOpNumThreads: opts.intraOpThreads ?? defaultThreads(),
        interOpNumThreads: 1,
        graphOptimizationLevel: opts.graphOptimization ?? 'all',
        enableCpuMemArena: opts.cpuArena ?? true,
        ...(opts.profilePrefix ? { enableProfiling: true, profileFilePrefix: opts.profilePrefix } : {}),
        ...(opts.spinning === false ? { extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } } : {}),
      };
      const session =
        typeof source === 'string' ? await ort.InferenceSession.create(source, options) : await ort.InferenceSession.create(source, options);
      return { session, provider, fallbacks };
    } catch (e) {
      fallbacks.push(`${provider}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  throw ccError('CC_ERR_PROVIDER', fallbacks.join('; '));
}

export const toOrt = (t: TensorData): ort.Tensor => new ort.Tensor(t.dtype === 'bool' ? 'bool' : t.dtype, t.data as TypedArray, t.dims as number[]);

export function fromOrt(t: ort.Tensor): TensorData {
  const dtype = t.type as TensorData['dtype'];
  return { dtype, dims: [...t.dims], data: t.data as TypedArray };
}

/** Run once with plain tensors in and out (tests, offline evaluation). */
export async function runOnce(s: ort.InferenceSession, feeds: Record<string, TensorData>): Promise<Record<string, TensorData>> {
  const ortFeeds: Record<string, ort.Tensor> = {};
  for (const [k, v] of Object.entries(feeds)) ortFeeds[k] = toOrt(v);
  const out = await s.run(ortFeeds);
  const res: Record<string, TensorData> = {};
  for (const [k, v] of Object.entries(out)) res[k] = fromOrt(v);
  return res;
}
