import { existsSync, readFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { z } from 'zod';
import { ccError } from '../common/errors.js';
import { readTokenFile } from '../common/token-file.js';
import { MAX_LAG_FRAMES, MAX_WINDOW_FRAMES } from './response-window.js';

/**
 * Server configuration: defaults < config file (JSON) < environment (CORTEXCAST_*) < command-line
 * flags. Validated once, at start, with every problem reported together; frozen afterwards.
 */
const provider = z.enum(['cuda', 'webgpu', 'cpu']);

const modelSchema = z
  .object({
    /** Name clients use; defaults to the bundle folder's name. */
    name: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'model names are 1-64 of A-Z a-z 0-9 . _ -').optional(),
    /** Bundle folder; a relative path is resolved from the working directory. */
    path: z.string().min(1),
    /** Execution providers in order of preference; the first that loads serves. */
    providers: z.array(provider).min(1).optional(),
    /** Inference worker threads for this model. */
    workers: z.number().int().min(1).max(64).optional(),
    /** ORT intra-op threads per worker. */
    threads: z.number().int().min(1).max(256).optional(),
    /** Iterative decoders (invenc): optimisation steps per frame, overriding the bundle's. */
    steps: z.number().int().min(1).max(100_000).optional(),
    /**
     * Continuous streams: decode the mean of the newest lengthFrames imaging frames, attributed to the
     * stimulus shown lagFrames + lengthFrames - 1 frames earlier. Overrides the window recorded in the
     * bundle's manifest; without either, every frame is a trial-level response (a window of one).
     */
    responseWindow: z
      .object({
        /** Imaging frames averaged per decode (memory per stream: lengthFrames x neurons x 4 bytes). */
        lengthFrames: z.number().int().min(1).max(MAX_WINDOW_FRAMES),
        /** Imaging frames between a stimulus's onset frame and the first frame of its window. */
        lagFrames: z.number().int().min(0).max(MAX_LAG_FRAMES),
      })
      .strict()
      .optional(),
  })
  .strict();

export const configSchema = z
  .object({
    /** Bind address for gRPC and HTTP; loopback unless told otherwise. */
    host: z.string().default('127.0.0.1'),
    /** gRPC ingest and Open Inference Protocol port (0: any free port). */
    grpcPort: z.number().int().min(0).max(65535).default(50051),
    /** HTTP port: WebSocket fan-out, viewer, /metrics, /healthz, /api/models, v2 REST (0: any free port). */
    httpPort: z.number().int().min(0).max(65535).default(8080),
    /** Decoder bundles to serve. */
    models: z.array(modelSchema).min(1, 'at least one model (bundle folder) is required, or a modelsDir'),
    /**
     * A folder of bundle folders, each served under its folder's name, scanned at start and on every
     * reload (ReloadModels, SIGHUP): what `cortexcast calibrate` writes there serves from the next reload.
     */
    modelsDir: z.string().optional(),
    /** Execution providers in order of preference; the first that loads a model serves it. */
    providers: z.array(provider).min(1).default(['cpu']),
    /** Inference worker threads per model. */
    workers: z.number().int().min(1).max(64).default(1),
    /** ONNX Runtime intra-op threads of each inference worker's session. */
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
     * on a busy box. Measured (docs/bench/serve-decode-nice-idle.txt, serve-decode-nice-loaded.txt): no gain on an idle machine; with
     * another process holding a core, 10 shortened the CNN's tail and lengthened int8 ridge's. Off by default.
     * Ignored, with a warning at start, where the OS cannot set a thread's priority.
     */
    decodeNice: z.number().int().min(0).max(19).default(0),
    limits: z
      .object({
        /** Largest gRPC message accepted (bytes). An 8,600-neuron frame is ~34 KB. Open Inference Protocol ModelInfer calls may be larger: 256 x the widest model's neurons x 4 bytes + 64 KiB. */
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
        /** How long a keepalive ping may go unanswered before the connection is closed. */
        keepaliveTimeoutMs: z.number().int().min(100).default(10_000),
        /** A TCP connection that has not sent the HTTP/2 preface within this time is closed. */
        handshakeTimeoutMs: z.number().int().min(100).default(3_000),
        /**
         * gRPC connections kept for callers that have proven the token (any call proves it when no token
         * is set): connections that have not may fill only maxConnections minus this many, and when they
         * have, the oldest of them is closed to make room for a new one.
         */
        reservedConnections: z.number().int().min(0).max(100_000).default(16),
        /** gRPC connections one peer address may hold; at the limit its oldest unproven one makes room, or the new one is closed. */
        maxConnectionsPerPeer: z.number().int().min(1).max(100_000).default(64),
        /** A gRPC connection is sent GOAWAY after this long (so no open call holds a slot for ever); clients reconnect. */
        maxConnectionAgeMs: z.number().int().min(100).default(3_600_000),
        /** After the GOAWAY of maxConnectionAgeMs, calls still open get this long to finish before the connection is cut. */
        maxConnectionAgeGraceMs: z.number().int().min(0).default(60_000),
        /** Concurrent grpc.health.v1.Health/Watch calls (each holds a connection open); more are refused RESOURCE_EXHAUSTED. */
        maxWatchCalls: z.number().int().min(0).max(10_000).default(16),
        /** ReloadModels: after a reload ends, another starts no sooner than this (a request meanwhile is refused RESOURCE_EXHAUSTED). */
        minReloadIntervalMs: z.number().int().min(0).default(2_000),
        /** An inference worker that has not loaded and warmed up its model within this time is terminated; the load (start or reload) fails. */
        warmupTimeoutMs: z.number().int().min(1).default(60_000),
        /** Unary calls (Decode, ModelInfer) waiting per model, over all callers; a batched ModelInfer counts once. More are refused RESOURCE_EXHAUSTED. */
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
        /** A file holding the shared token (first line), so it stays out of `ps` and shell history. */
        tokenFile: z.string().optional(),
        /** Admin token: ReloadModels needs it, and it works wherever the shared token does. Without one, ReloadModels is taken only from the server's own host (loopback); SIGHUP still reloads. */
        adminToken: z.string().min(16, 'auth tokens must be at least 16 characters').optional(),
        /** A file holding the admin token (first line). */
        adminTokenFile: z.string().optional(),
        /** Require the token on /metrics, /healthz and /api/models (default: on when a token is set). */
        protectHttp: z.boolean().optional(),
        /**
         * Origins (scheme://host[:port]) whose pages may open the WebSocket, besides the server's own:
         * localhost, 127.0.0.1 and [::1] at the HTTP port, and the bind host. Requests without an Origin (non-browser clients) are not affected.
         */
        allowedOrigins: z.array(z.string().regex(/^https?:\/\/[^/\s]+$/, 'origins are scheme://host[:port], no path')).default([]),
        /** Host headers (host[:port]) the HTTP port answers, besides the server's own names (as for allowedOrigins); others get 421 (DNS rebinding). */
        allowedHosts: z.array(z.string().regex(/^[^/\s]+$/, 'hosts are host[:port]')).default([]),
      })
      .strict()
      .default({}),
    /** TLS for gRPC and HTTP: certificate and private key files (PEM). */
    tls: z.object({ cert: z.string(), key: z.string() }).strict().optional(),
    /** Graceful shutdown: drain in-flight decodes for at most this long, then force. */
    shutdownGraceMs: z.number().int().min(0).max(120_000).default(5000),
    /** Serve the browser viewer at / on the HTTP port. */
    viewer: z.boolean().default(true),
    /** Least severe log level written (JSON lines on stderr). */
    logLevel: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
  })
  .strict();

export type ServerConfigInput = z.input<typeof configSchema>;
export type ServerConfig = Readonly<z.output<typeof configSchema>>;
export type ModelConfig = z.output<typeof modelSchema>;

/** Environment variables the server reads, each setting one key (docs/reference/configuration.md lists them). */
export const ENV: Record<string, (v: string) => Partial<ServerConfigInput>> = {
  CORTEXCAST_HOST: (v) => ({ host: v }),
  CORTEXCAST_GRPC_PORT: (v) => ({ grpcPort: Number(v) }),
  CORTEXCAST_HTTP_PORT: (v) => ({ httpPort: Number(v) }),
  CORTEXCAST_TOKEN: (v) => ({ auth: { token: v } }),
  CORTEXCAST_ADMIN_TOKEN: (v) => ({ auth: { adminToken: v } }),
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
  // With a modelsDir the configured list may be empty: the folder's bundles are the models.
  const schema = (merged as { modelsDir?: unknown }).modelsDir ? configSchema.extend({ models: z.array(modelSchema).default([]) }) : configSchema;
  const parsed = schema.safeParse(withTokenFiles(merged));
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
  if (cfg.modelsDir && !existsSync(cfg.modelsDir)) throw ccError('CC_ERR_CONFIG', `modelsDir: ${cfg.modelsDir} does not exist`);
  if (cfg.auth.protectHttp && !cfg.auth.token) throw ccError('CC_ERR_CONFIG', 'auth.protectHttp: needs auth.token (--token or CORTEXCAST_TOKEN)');
  if (cfg.auth.adminToken && cfg.auth.adminToken === cfg.auth.token) throw ccError('CC_ERR_CONFIG', 'auth.adminToken: must differ from auth.token (rigs hold that one)');
  if (cfg.limits.reservedConnections >= cfg.limits.maxConnections) throw ccError('CC_ERR_CONFIG', `limits.reservedConnections (${cfg.limits.reservedConnections}) must be below limits.maxConnections (${cfg.limits.maxConnections})`);
  const auth = { ...cfg.auth, protectHttp: cfg.auth.protectHttp ?? !!cfg.auth.token };
  if (cfg.tls) for (const f of [cfg.tls.cert, cfg.tls.key]) if (!existsSync(f)) throw ccError('CC_ERR_CONFIG', `tls: ${f} does not exist`);
  return deepFreeze({ ...cfg, auth, models, ...(cfg.modelsDir ? { modelsDir: resolve(cfg.modelsDir) } : {}) });
}

/** auth.tokenFile / auth.adminTokenFile: the token is the file's first line (a token given both ways is an error). */
function withTokenFiles(merged: Partial<ServerConfigInput>): Partial<ServerConfigInput> {
  const auth = merged.auth;
  if (!auth || (!auth.tokenFile && !auth.adminTokenFile)) return merged;
  const out = { ...auth };
  for (const [fileKey, key] of [['tokenFile', 'token'], ['adminTokenFile', 'adminToken']] as const) {
    const file = auth[fileKey];
    if (!file) continue;
    if (auth[key]) throw ccError('CC_ERR_CONFIG', `auth.${fileKey}: auth.${key} is also given; give the token one way`);
    out[key] = readTokenFile(file, `auth.${fileKey}`);
  }
  return { ...merged, auth: out };
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
