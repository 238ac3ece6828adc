import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import { readFileSync } from 'node:fs';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import type { Server as HttpServer } from 'node:http';
import type { WebSocketServer } from 'ws';
import type { ServerConfig } from './config.js';
import { Fanout } from './fanout.js';
import { decoderService, loadProto } from './grpc-service.js';
import { createHttpServer } from './http.js';
import { ServerMetrics } from './metrics.js';
import { ModelRegistry } from './model-registry.js';
import { DecodePipeline } from './pipeline.js';

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
 *   RUNNING --close()--> DRAINING (health NOT_SERVING; new streams refused; queued frames decoded)
 *          --drained or shutdownGraceMs--> CLOSED (streams ended UNAVAILABLE, sockets closed, workers stopped)
 * close() is safe to call twice; the second call returns the first's promise.
 */
export class CortexcastServer {
  state: 'NEW' | 'STARTING' | 'RUNNING' | 'DRAINING' | 'CLOSED' = 'NEW';
  readonly metrics = new ServerMetrics();
  readonly registry: ModelRegistry;
  readonly fanout: Fanout;
  readonly pipeline: DecodePipeline;
  private readonly grpcServer: grpc.Server;
  private readonly health = new HealthImplementation({ '': 'NOT_SERVING', [SERVICE]: 'NOT_SERVING' });
  private readonly openStreams = new Set<grpc.ServerDuplexStream<unknown, unknown>>();
  private netServer?: NetServer;
  private injector?: grpc.ConnectionInjector;
  private http?: { server: HttpServer; wss: WebSocketServer };
  private closing?: Promise<void>;
  grpcPort = 0;
  httpPort = 0;

  constructor(
    readonly cfg: ServerConfig,
    readonly log: Logger = jsonLogger(cfg.logLevel),
  ) {
    this.registry = new ModelRegistry(cfg);
    this.fanout = new Fanout(this.metrics, cfg.limits.maxSubscribers, cfg.limits.maxSubscriberBufferBytes);
    this.pipeline = new DecodePipeline(cfg, this.registry, this.metrics, (f) => this.fanout.publish(f));
    this.grpcServer = new grpc.Server({
      'grpc.max_receive_message_length': cfg.limits.maxMessageBytes,
      'grpc.max_send_message_length': 16 * 2 ** 20,
      'grpc.max_concurrent_streams': 16,
    });
  }

  async start(): Promise<this> {
    if (this.state !== 'NEW') throw new Error(`server cannot start from state ${this.state}`);
    this.state = 'STARTING';
    await this.registry.loadAll();
    for (const m of this.registry.all()) this.log('info', 'model ready', { model: m.name, kind: m.bundle.manifest.kind, provider: m.provider, fallbacks: m.pool.fallbacks, workers: m.pool.size, neurons: m.neurons });
    this.refreshModelInfo();
    const { pkg, service } = loadProto();
    this.grpcServer.addService(
      service,
      decoderService({
        cfg: this.cfg,
        registry: this.registry,
        pipeline: this.pipeline,
        metrics: this.metrics,
        isAccepting: () => this.state === 'RUNNING',
        openStreams: this.openStreams,
        reload: () => this.reload(),
        log: this.log,
      }),
    );
    this.health.addToServer(this.grpcServer);
    new ReflectionService(pkg).addToServer(this.grpcServer);
    const creds = this.cfg.tls
      ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: readFileSync(this.cfg.tls.cert), private_key: readFileSync(this.cfg.tls.key) }], false)
      : grpc.ServerCredentials.createInsecure();
    // Our own listener so every connection gets TCP_NODELAY (grpc-js sets it on clients only; without
    // it small acks and frames wait for Nagle + delayed ACK: p99 tens of ms at 16 streams).
    const injector = (this.injector = this.grpcServer.createConnectionInjector(creds));
    this.netServer = createNetServer({ noDelay: true }, (socket) => injector.injectConnection(socket));
    this.grpcPort = await listen(this.netServer, this.cfg.host, this.cfg.grpcPort);
    this.http = createHttpServer({
      cfg: this.cfg,
      registry: this.registry,
      fanout: this.fanout,
      metrics: this.metrics,
      status: () => ({ serving: this.state === 'RUNNING', state: this.state }),
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

  /** Reload every bundle; the new set replaces the old at once, streams stay connected. */
  async reload(): Promise<void> {
    if (this.state !== 'RUNNING') throw new Error(`cannot reload while ${this.state}`);
    const t0 = Date.now();
    await this.registry.loadAll();
    this.refreshModelInfo();
    this.log('info', 'models reloaded', { models: this.registry.all().map((m) => m.name), ms: Date.now() - t0 });
  }

  private refreshModelInfo(): void {
    this.metrics.modelInfo.reset();
    for (const m of this.registry.all()) this.metrics.modelInfo.set({ model: m.name, provider: m.provider, kind: m.bundle.manifest.kind }, 1);
  }

  private refreshGauges(): void {
    for (const m of this.registry.all()) {
      this.metrics.queueDepth.set({ model: m.name }, this.pipeline.queueDepth(m.name));
      this.metrics.workerBusy.set({ model: m.name }, m.pool.busy / m.pool.size);
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
    this.state = 'DRAINING';
    this.health.setStatus('', 'NOT_SERVING');
    this.health.setStatus(SERVICE, 'NOT_SERVING');
    this.log('info', 'draining', { streams: this.openStreams.size, subscribers: this.fanout.size });
    const drained = await this.pipeline.drain(this.cfg.shutdownGraceMs);
    for (const call of this.openStreams)
      if (!call.cancelled && !call.destroyed) call.emit('error', Object.assign(new Error('server is shutting down'), { code: grpc.status.UNAVAILABLE, details: 'server is shutting down' }));
    this.openStreams.clear();
    this.fanout.closeAll(1001, 'server shutting down');
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.grpcServer.forceShutdown();
        resolve();
      }, Math.max(100, this.cfg.shutdownGraceMs / 2));
      timer.unref();
      this.grpcServer.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.injector?.destroy();
    await new Promise<void>((r) => (this.netServer ? this.netServer.close(() => r()) : r()));
    if (this.http) {
      for (const c of this.http.wss.clients) c.terminate();
      this.http.wss.close();
      this.http.server.closeAllConnections();
      await new Promise<void>((r) => this.http!.server.close(() => r()));
    }
    await this.registry.close(this.cfg.shutdownGraceMs);
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
