import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { readFileSync } from 'node:fs';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import type { Server as HttpServer } from 'node:http';
import type { WebSocketServer } from 'ws';
import type { ServerConfig } from './config.js';
import { Fanout } from './fanout.js';
import { decoderService, loadProto, STREAM_FRAMES_PATH } from './grpc-service.js';
import { callGuard, metadataAuthorised, UNAUTHENTICATED_DETAILS } from './auth.js';
import { ConnectionGate } from './connection-gate.js';
import { status } from './unary.js';
import { RateLimitedLog, TransportFailures, transportLimit } from './wire-guard.js';
import { inferenceV2Service, loadV2Proto, v2RequestBytes, v2ResponseBytes } from './inference-v2.js';
import { createHttpServer } from './http.js';
import { ServerMetrics } from './metrics.js';
import { ModelRegistry } from './model-registry.js';
import { DecodeScheduler } from './scheduler.js';
import { ResponseFeed, tapStreamFrames } from './response-feed.js';

export type Logger = (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;

/** Structured logs: one JSON object per line on stderr. */
export const jsonLogger =
  (minLevel: ServerConfig['logLevel'] = 'info'): Logger =>
  (level, msg, fields) => {
    const order = ['error', 'warn', 'info', 'debug'];
    if (order.indexOf(level) > order.indexOf(minLevel)) return;
    process.stderr.write(JSON.stringify({ time: new Date().toISOString(), level, msg, ...fields }) + '\n');
  };

const SERVICE = 'cortexcast.v1.Decoder';

/**
 * `cortexcast serve`: gRPC ingest -> std scaling -> frame policy -> inference workers -> WebSocket
 * fan-out, with Prometheus metrics, health and reflection.
 *
 * Lifecycle:
 *   NEW --start()--> STARTING --models warmed, ports bound--> RUNNING
 *   RUNNING --close()--> DRAINING (health NOT_SERVING; new streams, frames and Decode calls refused;
 *          queued work decoded) --drained--> streams ended UNAVAILABLE, connections closed, workers
 *          stopped --> CLOSED. The whole of it takes at most shutdownGraceMs (then everything is forced).
 * close() is safe to call twice; the second call returns the first's promise.
 */
export class CortexcastServer {
  state: 'NEW' | 'STARTING' | 'RUNNING' | 'DRAINING' | 'CLOSED' = 'NEW';
  readonly metrics = new ServerMetrics();
  readonly registry: ModelRegistry;
  readonly fanout: Fanout;
  /** Raw frames for calibration (/ws/responses). */
  readonly responseFeed: ResponseFeed;
  readonly scheduler: DecodeScheduler;
  private readonly grpcServer: grpc.Server;
  /** The options object grpc-js keeps and reads per call (the message limits change on reload). */
  private readonly grpcOptions: grpc.ServerOptions;
  /** The Open Inference Protocol's message limit for the models served now (applyMessageLimits). */
  private v2MessageBytes = 0;
  private readonly health = new HealthImplementation({ '': 'NOT_SERVING', [SERVICE]: 'NOT_SERVING' });
  /** Open ingest calls, each with its way to end once every frame it accepted has its ack. */
  private readonly openStreams = new Map<grpc.ServerDuplexStream<unknown, unknown>, { shutdown(settleMs: number, flushMs: () => number): Promise<void> }>();
  private readonly gate: ConnectionGate;
  private netServer?: NetServer;
  private injector?: grpc.ConnectionInjector;
  private readonly sockets = new Set<Socket>();
  private readonly transport: TransportFailures;
  private readonly warnings: RateLimitedLog;
  /** The reload running now, and the one queued behind it (concurrent requests share it). */
  private reloading?: Promise<void>;
  private nextReload?: Promise<void>;
  private http?: { server: HttpServer; wss: WebSocketServer };
  private closing?: Promise<void>;
  grpcPort = 0;
  httpPort = 0;

  constructor(
    readonly cfg: ServerConfig,
    readonly log: Logger = jsonLogger(cfg.logLevel),
  ) {
    this.registry = new ModelRegistry(cfg, {
      poolChanged: (model) => this.scheduler.wake(model),
      workerDied: (model, e) => this.log('error', 'inference worker died', { model, error: e.message, alive: this.registry.has(model) ? this.registry.get(model).pool.alive : 0 }),
    });
    this.fanout = new Fanout(this.metrics, cfg.limits);
    this.responseFeed = new ResponseFeed(this.metrics, cfg.limits);
    this.scheduler = new DecodeScheduler(cfg, this.registry, this.metrics);
    this.scheduler.onSettleError = (e) => this.log('error', 'frame outcome handler failed', { error: (e as Error).stack ?? String(e) });
    const l = cfg.limits;
    this.warnings = new RateLimitedLog(this.log);
    this.gate = new ConnectionGate(l, this.metrics);
    this.transport = new TransportFailures(new Set([STREAM_FRAMES_PATH]), { transportBytes: transportLimit(l.maxMessageBytes), requestTimeoutMs: l.requestTimeoutMs }, (kind, method, details) => {
      this.metrics.framesRejected.inc({ reason: kind === 'oversized' ? 'message_too_large' : kind === 'undecompressible' ? 'malformed_frame' : 'request_timeout' });
      this.warnings.warn(kind, 'call ended by the transport', { method, error: details });
    }, () => this.metrics.messagesRead.inc());
    this.grpcServer = new grpc.Server(this.grpcOptions = {
      // Handlers refuse messages over maxMessageBytes one by one; the transport only ends calls
      // whose messages are far larger (it cannot skip a message it did not read). Both limits
      // follow the served models' batched Open Inference Protocol calls (applyMessageLimits).
      'grpc.max_receive_message_length': transportLimit(l.maxMessageBytes),
      'grpc.max_send_message_length': 16 * 2 ** 20,
      'grpc.max_concurrent_streams': l.maxStreamsPerConnection,
      'grpc.max_connection_idle_ms': l.connectionIdleMs,
      'grpc.keepalive_time_ms': l.keepaliveMs,
      'grpc.keepalive_timeout_ms': l.keepaliveTimeoutMs,
      // An open call (Health/Watch, a stream) keeps the idle and keepalive timers from ever closing a
      // connection: its age does.
      'grpc.max_connection_age_ms': l.maxConnectionAgeMs,
      'grpc.max_connection_age_grace_ms': l.maxConnectionAgeGraceMs,
      // The transport guard patches the base call (grpc-js's own failures go straight to it), so it
      // comes first; the token is checked next, from the metadata alone: a refused call's body is never read.
      interceptors: [this.transport.interceptor, callGuard({ auth: cfg.auth, maxWatchCalls: l.maxWatchCalls, metrics: this.metrics, prove: (c) => this.gate.prove(c.remoteAddress, c.remotePort) })],
    });
  }

  async start(): Promise<this> {
    if (this.state !== 'NEW') throw new Error(`server cannot start from state ${this.state}`);
    this.state = 'STARTING';
    await this.registry.loadAll();
    this.applyMessageLimits();
    this.logModelsReady();
    this.refreshModelInfo();
    const { pkg, service } = loadProto(this.cfg.limits.maxMessageBytes);
    this.grpcServer.addService(
      service,
      tapStreamFrames(decoderService(
        {
          cfg: this.cfg,
          registry: this.registry,
          scheduler: this.scheduler,
          metrics: this.metrics,
          publish: (f) => this.fanout.publish(f),
          isAccepting: () => this.state === 'RUNNING',
          openStreams: this.openStreams,
          reload: () => this.reload(),
          log: this.log,
        },
        this.transport,
      ), this.responseFeed, this.cfg.auth.token),
    );
    const v2 = loadV2Proto(() => this.v2MessageBytes);
    this.grpcServer.addService(
      v2.service,
      inferenceV2Service({
        cfg: this.cfg,
        registry: this.registry,
        scheduler: this.scheduler,
        metrics: this.metrics,
        isAccepting: () => this.state === 'RUNNING',
        isLive: () => this.state === 'RUNNING' || this.state === 'DRAINING',
        isReady: () => this.isServing(),
        log: this.log,
      }),
    );
    this.health.addToServer(this.grpcServer);
    this.addReflection(new ReflectionService({ ...pkg, ...v2.pkg }));
    const creds = this.cfg.tls
      ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(this.cfg.tls.cert), private_key: readFileSync(this.cfg.tls.key) }], false)
      : grpc.ServerCredentials.createInsecure();
    // Our own listener so every connection gets TCP_NODELAY (grpc-js sets it on clients only; without
    // it small acks and frames wait for Nagle + delayed ACK: p99 tens of ms at 16 streams).
    const injector = (this.injector = this.grpcServer.createConnectionInjector(creds));
    this.netServer = createNetServer({ noDelay: true }, (socket) => this.accept(socket, injector));
    this.grpcPort = await listen(this.netServer, this.cfg.host, this.cfg.grpcPort);
    this.http = createHttpServer({
      cfg: this.cfg,
      registry: this.registry,
      fanout: this.fanout,
      responses: this.responseFeed,
      metrics: this.metrics,
      status: () => {
        const broken = this.registry.broken();
        return { serving: this.isServing(), state: this.state, ...(broken.length ? { broken } : {}) };
      },
      accepting: () => this.state === 'RUNNING',
      log: this.log,
      beforeScrape: () => this.refreshGauges(),
    });
    this.httpPort = await listen(this.http.server, this.cfg.host, this.cfg.httpPort);
    this.state = 'RUNNING';
    this.health.setStatus('', 'SERVING');
    this.health.setStatus(SERVICE, 'SERVING');
    const scheme = this.cfg.tls ? 'https' : 'http';
    this.log('info', 'serving', { grpc: `${this.cfg.host}:${this.grpcPort}`, http: `${scheme}://${this.cfg.host}:${this.httpPort}/`, metrics: `${scheme}://${this.cfg.host}:${this.httpPort}/metrics` });
    return this;
  }

  /**
   * Server reflection (grpcurl, stock tools) behind the same token, and with backpressure: the
   * library writes one response per request without waiting, so a client that sends requests and
   * never reads would grow the server's memory; here reading stops until its responses drain.
   */
  private addReflection(reflection: ReflectionService): void {
    const token = this.cfg.auth.token;
    const proxy = {
      addService: (def: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation) => {
        const guarded: grpc.UntypedServiceImplementation = {};
        for (const [name, handler] of Object.entries(impl))
          guarded[name] = (stream: grpc.ServerDuplexStream<unknown, unknown>) => {
            if (!metadataAuthorised(stream.metadata, token)) {
              this.metrics.framesRejected.inc({ reason: 'unauthenticated' });
              stream.emit('error', status(grpc.status.UNAUTHENTICATED, UNAUTHENTICATED_DETAILS));
              return;
            }
            const write = stream.write.bind(stream) as (m: unknown) => boolean;
            stream.write = ((m: unknown): boolean => {
              const ok = write(m);
              if (!ok && !stream.isPaused()) {
                stream.pause();
                stream.once('drain', () => stream.resume());
              }
              return ok;
            }) as typeof stream.write;
            (handler as (s: grpc.ServerDuplexStream<unknown, unknown>) => void)(stream);
          };
        this.grpcServer.addService(def, guarded);
      },
    };
    reflection.addToServer(proxy as unknown as grpc.Server);
  }

  /**
   * Reload every bundle; the new set replaces the old at once, streams stay connected. One reload
   * runs at a time: requests during one share the next, which starts when it ends (so every caller
   * gets the files as they were when it asked, and a flood of requests costs two loads, not N).
   */
  reload(): Promise<void> {
    if (this.state !== 'RUNNING') return Promise.reject(new Error(`cannot reload while ${this.state}`));
    if (!this.reloading) {
      this.reloading = this.reloadOnce().finally(() => (this.reloading = undefined));
      return this.reloading;
    }
    this.nextReload ??= this.reloading
      .catch(() => undefined)
      .then(() => {
        this.nextReload = undefined;
        return this.reload();
      });
    return this.nextReload;
  }

  private async reloadOnce(): Promise<void> {
    const t0 = Date.now();
    await this.registry.loadAll();
    // A shutdown that began meanwhile owns the models now: it closes what this load opened.
    if (this.state !== 'RUNNING') throw new Error(`reload finished while ${this.state}; the server is stopping`);
    this.applyMessageLimits();
    this.refreshModelInfo();
    this.log('info', 'models reloaded', { models: this.registry.all().map((m) => m.name), ms: Date.now() - t0 });
    this.logModelsReady();
  }

  /** One line per served model (at start and after each reload: new workers, new priorities). */
  private logModelsReady(): void {
    for (const m of this.registry.all()) {
      this.log('info', 'model ready', { model: m.name, kind: m.bundle.manifest.kind, provider: m.provider, fallbacks: m.pool.fallbacks, workers: m.pool.size, neurons: m.neurons, nice: 'applied' in m.pool.nice ? m.pool.nice.applied : null });
      if ('failed' in m.pool.nice) this.log('warn', 'inference threads keep the server priority (decodeNice not applied)', { model: m.name, reason: m.pool.nice.failed });
    }
  }

  /** Taking work, and every model has a live inference worker: /healthz, ServerReady, cortexcast_serving. */
  private isServing(): boolean {
    return this.state === 'RUNNING' && this.registry.broken().length === 0;
  }

  /**
   * A ModelInfer may carry V2_MAX_ROWS frames of the widest served model: its message limit is
   * max over models of (256 x neurons x 4 bytes) + 64 KiB, never under limits.maxMessageBytes, and
   * the transport's limits follow. grpc-js reads these options when each call starts, so changing
   * them here applies to every later call (docs/guides/batching-and-bundles.md).
   */
  private applyMessageLimits(): void {
    const models = this.registry.all();
    this.v2MessageBytes = v2RequestBytes(models, this.cfg.limits.maxMessageBytes);
    this.grpcOptions['grpc.max_receive_message_length'] = transportLimit(this.v2MessageBytes);
    this.grpcOptions['grpc.max_send_message_length'] = Math.max(16 * 2 ** 20, v2ResponseBytes(models));
  }

  private refreshModelInfo(): void {
    this.metrics.modelInfo.reset();
    for (const m of this.registry.all()) this.metrics.modelInfo.set({ model: m.name, provider: m.provider, kind: m.bundle.manifest.kind }, 1);
  }

  /**
   * Every gRPC connection: TCP_NODELAY (set by the listener), admitted by the connection gate (limits
   * on unproven connections and per peer, the handshake deadline: grpc-js's idle and keepalive timers
   * only start once a peer speaks HTTP/2). Errors on a socket end that socket, never the process.
   */
  private accept(socket: Socket, injector: grpc.ConnectionInjector): void {
    this.sockets.add(socket);
    socket.on('close', () => this.sockets.delete(socket));
    socket.on('error', () => socket.destroy());
    if (this.state !== 'RUNNING') {
      socket.destroy();
      return;
    }
    if (this.gate.admit(socket)) injector.injectConnection(socket);
  }

  private refreshGauges(): void {
    this.metrics.serving.set(this.isServing() ? 1 : 0);
    for (const m of this.registry.all()) {
      this.metrics.queueDepth.set({ model: m.name }, this.scheduler.queueDepth(m.name));
      this.metrics.workerBusy.set({ model: m.name }, m.pool.busy / m.pool.size);
      this.metrics.workersAlive.set({ model: m.name }, m.pool.alive);
    }
  }

  close(): Promise<void> {
    this.closing ??= this.shutdown();
    return this.closing;
  }

  private async shutdown(): Promise<void> {
    if (this.state === 'NEW' || this.state === 'CLOSED') {
      this.state = 'CLOSED';
      return;
    }
    // One budget for the whole shutdown: each step gets what the earlier ones left.
    const deadline = Date.now() + this.cfg.shutdownGraceMs;
    const left = (reserveMs = 0): number => Math.max(0, deadline - Date.now() - reserveMs);
    this.state = 'DRAINING';
    this.health.setStatus('', 'NOT_SERVING');
    this.health.setStatus(SERVICE, 'NOT_SERVING');
    this.log('info', 'draining', { streams: this.openStreams.size, subscribers: this.fanout.size });
    // Half the grace for queued work, half for ending the streams: an ack that never reaches its
    // rig is as bad as a frame never decoded.
    const reserve = this.cfg.shutdownGraceMs / 2;
    const drained = await this.scheduler.drain(left(reserve));
    // Each stream ends once every frame it accepted has its final ack (decoded by a batch still
    // running, else DROPPED shutdown) and those acks are written: then the status goes out. What
    // drain left: half for batches still running to settle, the rest for the acks to go out.
    await Promise.all([...this.openStreams.values()].map((s) => s.shutdown(left(reserve / 2), () => left(Math.min(50, reserve / 8)))));
    this.openStreams.clear();
    this.fanout.closeAll(1001, 'server shutting down');
    this.responseFeed.closeAll(1001, 'server shutting down');
    this.netServer?.close();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.grpcServer.forceShutdown();
        resolve();
      }, left());
      timer.unref();
      this.grpcServer.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.injector?.destroy();
    // Connections grpc-js did not close (a peer that never spoke HTTP/2, one still sending): cut.
    for (const s of this.sockets) s.destroy();
    if (this.http) {
      for (const c of this.http.wss.clients) c.terminate();
      this.http.wss.close();
      this.http.server.closeAllConnections();
      this.http.server.close();
    }
    // A reload still loading would swap in pools after the close below: let it land first.
    if (this.reloading) await Promise.race([this.reloading.catch(() => undefined), new Promise((r) => setTimeout(r, left()).unref())]);
    await this.registry.close(left());
    this.state = 'CLOSED';
    this.log('info', 'stopped', { drained });
  }
}

function listen(server: NetServer | HttpServer, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve((server.address() as AddressInfo).port);
    });
  });
}
