import { existsSync, readFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { z } from 'zod';
import { ccError } from '../common/errors.js';

/**
 * Server configuration: defaults < config file (JSON) < environment (CORTEXCAST_*) < command-line
 * flags. Validated once, at start, with every problem reported together; frozen afterwards.
 */
const provider = z.enum(['cuda', 'webgpu', 'cpu']);

const modelSchema = z
  .object({
    /** Name clients use; defaults to the bundle folder's name. */
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'model names are 1-64 of A-Z a-z 0-9 . _ -').optional(),
    path: z.string().min(1),
    /** Execution providers in order of preference; the first that loads serves. */
    providers: z.array(provider).min(1).optional(),
    /** Inference worker threads for this model. */
    workers: z.number().int().min(1).max(64).optional(),
    /** ORT intra-op threads per worker. */
    threads: z.number().int().min(1).max(256).optional(),
    /** Iterative decoders (invenc): optimisation steps per frame, overriding the bundle's. */
    steps: z.number().int().min(1).max(100_000).optional(),
  })
  .strict();

export const configSchema = z
  .object({
    /** Bind address for gRPC and HTTP; loopback unless told otherwise. */
    host: z.string().default('127.0.0.1'),
    grpcPort: z.number().int().min(0).max(65535).default(50051),
    httpPort: z.number().int().min(0).max(65535).default(8080),
    models: z.array(modelSchema).min(1, 'at least one model (bundle folder) is required'),
    providers: z.array(provider).min(1).default(['cpu']),
    workers: z.number().int().min(1).max(64).default(1),
    threads: z.number().int().min(1).max(256).default(1),
    /** Iterative decoders (invenc): steps per frame for every such model (latency/quality knob). */
    iterativeSteps: z.number().int().min(1).max(100_000).optional(),
    /** latest: a stream keeps only its newest undecoded frame; fifo: a bounded queue per stream. */
    framePolicy: z.enum(['latest', 'fifo']).default('latest'),
    /** fifo only: frames queued per stream before the oldest is dropped. */
    queueDepth: z.number().int().min(1).max(1024).default(8),
    /** Frames from different streams decoded together in one run, at most. */
    maxBatch: z.number().int().min(1).max(256).default(8),
    /**
     * Linux nice value added to every inference thread (and the ORT threads it starts), so that ingest,
     * scheduling and fan-out on the main thread preempt a running decode instead of queueing behind it
     * on a busy box. Measured (docs/bench/serve-cpu-s10-nice*.txt): no gain on an idle machine; with
     * another process holding a core, 10 shortened the CNN's tail and lengthened int8 ridge's. Off by default.
     * Ignored, with a warning at start, where the OS cannot set a thread's priority.
     */
    decodeNice: z.number().int().min(0).max(19).default(0),
    limits: z
      .object({
        /** Largest gRPC message accepted (bytes). An 8,600-neuron frame is ~34 KB. */
        maxMessageBytes: z.number().int().min(1024).max(64 * 2 ** 20).default(2 ** 20),
        /** Concurrent ingest streams. */
        maxStreams: z.number().int().min(1).max(10_000).default(64),
        /** Concurrent WebSocket subscribers. */
        maxSubscribers: z.number().int().min(1).max(10_000).default(64),
        /** A subscriber with more than this many bytes unsent skips frames until it catches up. */
        maxSubscriberBufferBytes: z.number().int().min(1024).default(2 ** 20),
        /** Stream ids one StreamFrames call may own (each has its own frame queue). */
        maxStreamIdsPerCall: z.number().int().min(1).max(10_000).default(16),
        /** A unary request whose message has not fully arrived within this time is ended DEADLINE_EXCEEDED. */
        requestTimeoutMs: z.number().int().min(100).default(10_000),
        /** Concurrent gRPC streams on one HTTP/2 connection; further calls wait (HTTP/2 SETTINGS). */
        maxStreamsPerConnection: z.number().int().min(1).max(1000).default(16),
        /** Open TCP connections on the gRPC port; more are closed at once. */
        maxConnections: z.number().int().min(1).max(100_000).default(256),
        /** An ingest stream with no frame for this long is ended UNAVAILABLE (0: never). */
        streamIdleMs: z.number().int().min(0).default(60_000),
        /** A gRPC connection with no call for this long is closed (GOAWAY). */
        connectionIdleMs: z.number().int().min(100).default(120_000),
        /** HTTP/2 keepalive: ping every connection this often; no answer within keepaliveTimeoutMs closes it. */
        keepaliveMs: z.number().int().min(100).default(30_000),
        keepaliveTimeoutMs: z.number().int().min(100).default(10_000),
        /** A TCP connection that has not sent the HTTP/2 preface within this time is closed. */
        handshakeTimeoutMs: z.number().int().min(100).default(10_000),
        /** Unary Decode calls waiting per model; more are refused RESOURCE_EXHAUSTED. */
        maxQueuedDecodes: z.number().int().min(1).max(100_000).default(64),
        /** A unary Decode that no worker has taken within this time (or its deadline) fails DEADLINE_EXCEEDED. */
        maxDecodeWaitMs: z.number().int().min(1).default(5_000),
        /** WebSocket subscribers are pinged this often; one that has not answered the last ping is dropped. */
        subscriberPingMs: z.number().int().min(100).default(30_000),
      })
      .strict()
      .default({}),
    auth: z
      .object({
        /** Shared token: gRPC metadata `authorization: Bearer <token>`, WebSocket header or ?token=. */
        token: z.string().min(16, 'auth tokens must be at least 16 characters').optional(),
        /** Also require the token on /metrics, /healthz and /api/models (they answer without one by default). */
        protectHttp: z.boolean().default(false),
      })
      .strict()
      .default({}),
    tls: z.object({ cert: z.string(), key: z.string() }).strict().optional(),
    /** Graceful shutdown: drain in-flight decodes for at most this long, then force. */
    shutdownGraceMs: z.number().int().min(0).max(120_000).default(5000),
    /** Serve the browser viewer at / on the HTTP port. */
    viewer: z.boolean().default(true),
    logLevel: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
  })
  .strict();

export type ServerConfigInput = z.input<typeof configSchema>;
export type ServerConfig = Readonly<z.output<typeof configSchema>>;
export type ModelConfig = z.output<typeof modelSchema>;

const ENV: Record<string, (v: string) => Partial<ServerConfigInput>> = {
  CORTEXCAST_HOST: (v) => ({ host: v }),
  CORTEXCAST_GRPC_PORT: (v) => ({ grpcPort: Number(v) }),
  CORTEXCAST_HTTP_PORT: (v) => ({ httpPort: Number(v) }),
  CORTEXCAST_TOKEN: (v) => ({ auth: { token: v } }),
  CORTEXCAST_PROVIDERS: (v) => ({ providers: v.split(',') as ('cuda' | 'webgpu' | 'cpu')[] }),
  CORTEXCAST_WORKERS: (v) => ({ workers: Number(v) }),
  CORTEXCAST_THREADS: (v) => ({ threads: Number(v) }),
  CORTEXCAST_DECODE_NICE: (v) => ({ decodeNice: Number(v) }),
};

/** Merge the sources, validate everything at once, resolve paths and freeze. */
export function loadServerConfig(sources: { file?: string; env?: NodeJS.ProcessEnv; flags?: Partial<ServerConfigInput> } = {}): ServerConfig {
  let fromFile: Partial<ServerConfigInput> = {};
  if (sources.file) {
    if (!existsSync(sources.file)) throw ccError('CC_ERR_CONFIG', `config file ${sources.file} does not exist`);
    try {
      fromFile = JSON.parse(readFileSync(sources.file, 'utf8')) as Partial<ServerConfigInput>;
    } catch (e) {
      throw ccError('CC_ERR_CONFIG', `config file ${sources.file} is not valid JSON: ${(e as Error).message}`);
    }
  }
  const fromEnv: Partial<ServerConfigInput> = {};
  for (const [k, f] of Object.entries(ENV)) {
    const v = sources.env?.[k];
    if (v !== undefined && v !== '') Object.assign(fromEnv, merge(fromEnv, f(v)));
  }
  const merged = merge(merge(fromFile, fromEnv), sources.flags ?? {});
  const parsed = configSchema.safeParse(merged);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw ccError('CC_ERR_CONFIG', problems.join('; '));
  }
  const cfg = parsed.data;
  const names = new Set<string>();
  const models = cfg.models.map((m) => {
    const name = m.name ?? basename(resolve(m.path));
    if (names.has(name)) throw ccError('CC_ERR_CONFIG', `models: name '${name}' is used twice`);
    names.add(name);
    return Object.freeze({ ...m, name, path: resolve(m.path) });
  });
  if (cfg.auth.protectHttp && !cfg.auth.token) throw ccError('CC_ERR_CONFIG', 'auth.protectHttp: needs auth.token (--token or CORTEXCAST_TOKEN)');
  if (cfg.tls) for (const f of [cfg.tls.cert, cfg.tls.key]) if (!existsSync(f)) throw ccError('CC_ERR_CONFIG', `tls: ${f} does not exist`);
  return deepFreeze({ ...cfg, models });
}

function merge<T extends object>(a: T, b: Partial<T>): T {
  const out = { ...a } as Record<string, unknown>;
  for (const [k, v] of Object.entries(b)) {
    if (v === undefined) continue;
    const cur = out[k];
    out[k] = cur && typeof cur === 'object' && !Array.isArray(cur) && v && typeof v === 'object' && !Array.isArray(v) ? merge(cur as object, v as object) : v;
  }
  return out as T;
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
