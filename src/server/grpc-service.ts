import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { ccError, CortexcastError, quoted } from '../common/errors.js';
import type { ServerConfig } from './config.js';
import { decodeResponses, now, toGrey, type DecodedFrame } from './frames.js';
import type { ServerMetrics } from './metrics.js';
import { modelFacts, type ModelRegistry, type ServedModel } from './model-registry.js';
import type { DecodeScheduler, DropReason } from './scheduler.js';
import { tokenMatches } from './auth.js';
import { badMessageOf, guardDeserializers, RateLimitedLog, type TransportFailures } from './wire-guard.js';
import { IngestCall, reasonOf, status, type AckMsg, type ResponseFrameMsg, type StreamOwners } from './ingest-call.js';

export { status };

export const PROTO_PATH = fileURLToPath(new URL('../../proto/cortexcast/v1/decoder.proto', import.meta.url));

const SERVICE = 'cortexcast.v1.Decoder';
export const STREAM_FRAMES_PATH = `/${SERVICE}/StreamFrames`;

/**
 * 64-bit integers arrive as decimal strings (longs: String) so sequence numbers stay exact. Every
 * method's deserializer checks size and protobuf validity (wire-guard), so a bad message is refused
 * by the handler: one REJECTED ack on a stream, a status on a unary call.
 */
export function loadProto(maxMessageBytes: number): { pkg: protoLoader.PackageDefinition; service: grpc.ServiceDefinition } {
  const pkg = protoLoader.loadSync(PROTO_PATH, { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true });
  const loaded = grpc.loadPackageDefinition(pkg) as unknown as { cortexcast: { v1: { Decoder: { service: grpc.ServiceDefinition } } } };
  return { pkg, service: guardDeserializers(loaded.cortexcast.v1.Decoder.service, maxMessageBytes) };
}

export interface ServiceDeps {
  cfg: ServerConfig;
  registry: ModelRegistry;
  scheduler: DecodeScheduler;
  metrics: ServerMetrics;
  publish: (f: DecodedFrame) => void;
  isAccepting: () => boolean;
  /** Open ingest calls (the server ends them on shutdown). */
  openStreams: Set<grpc.ServerDuplexStream<unknown, unknown>>;
  reload: () => Promise<void>;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}




/** How a unary Decode that did not run is answered. */
export const UNARY_STATUS: Record<DropReason, grpc.status> = {
  superseded: grpc.status.ABORTED,
  queue_full: grpc.status.RESOURCE_EXHAUSTED,
  shutdown: grpc.status.UNAVAILABLE,
  stream_closed: grpc.status.CANCELLED,
  model_unloaded: grpc.status.UNAVAILABLE,
  no_workers: grpc.status.UNAVAILABLE,
  model_changed: grpc.status.FAILED_PRECONDITION,
  decode_failed: grpc.status.INTERNAL,
  deadline: grpc.status.DEADLINE_EXCEEDED,
  cancelled: grpc.status.CANCELLED,
};

/** The gRPC Decoder service: per-call auth, validation with precise statuses, every frame into the one scheduler. */
export function decoderService(d: ServiceDeps, transport: TransportFailures): grpc.UntypedServiceImplementation {
  const authorised = (md: grpc.Metadata): boolean => {
    const token = d.cfg.auth.token;
    if (!token) return true;
    const h = String(md.get('authorization')[0] ?? '');
    const ok = tokenMatches(h.replace(/^Bearer\s+/i, ''), token);
    if (!ok) d.metrics.framesRejected.inc({ reason: 'unauthenticated' });
    return ok;
  };
  const modelInfo = (m: ServedModel): Record<string, unknown> => ({ ...modelFacts(m), bundlePath: m.bundle.dir, manifestJson: JSON.stringify(m.bundle.manifest) });
  const warnings = new RateLimitedLog(d.log);
  const owners: StreamOwners = new Map();

  /** A handler that throws is a bug; it must cost one call, never the process. */
  const guardUnary =
    <Req, Res>(name: string, h: (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void) =>
    (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>): void => {
      let answered = false;
      const once: grpc.sendUnaryData<Res> = (e, v) => {
        if (answered) return;
        answered = true;
        cb(e, v);
      };
      const bad = badMessageOf(call.request);
      if (bad) {
        d.metrics.framesRejected.inc({ reason: bad.kind === 'oversized' ? 'message_too_large' : 'malformed_frame' });
        return once(status(bad.kind === 'oversized' ? grpc.status.RESOURCE_EXHAUSTED : grpc.status.INVALID_ARGUMENT, bad.message));
      }
      try {
        h(call, once);
      } catch (e) {
        d.log('error', 'handler failed', { rpc: name, error: (e as Error).stack ?? String(e) });
        once(status(grpc.status.INTERNAL, `internal error in ${name}`));
      }
    };

  return {
    StreamFrames(call: grpc.ServerDuplexStream<ResponseFrameMsg, AckMsg>) {
      if (!authorised(call.metadata)) {
        call.emit('error', status(grpc.status.UNAUTHENTICATED, 'missing or wrong token (metadata authorization: Bearer <token>)'));
        return;
      }
      if (!d.isAccepting()) {
        call.emit('error', status(grpc.status.UNAVAILABLE, 'server is shutting down'));
        return;
      }
      const openStreams = d.openStreams;
      if (openStreams.size >= d.cfg.limits.maxStreams) {
        d.metrics.framesRejected.inc({ reason: 'too_many_streams' });
        call.emit('error', status(grpc.status.RESOURCE_EXHAUSTED, `stream limit reached (${d.cfg.limits.maxStreams}); raise limits.maxStreams`));
        return;
      }
      const key = call as grpc.ServerDuplexStream<unknown, unknown>;
      openStreams.add(key);
      d.metrics.streams.set(openStreams.size);
      let unregister = (): void => undefined;
      const ingest = new IngestCall(call, {
        ...d,
        owners,
        warnings,
        onFinish: () => {
          unregister();
          openStreams.delete(key);
          d.metrics.streams.set(openStreams.size);
        },
      });
      unregister = transport.register(call.metadata, (_details, send) => ingest.transportFailed(send));
    },

    Decode: guardUnary('Decode', (call: grpc.ServerUnaryCall<{ model: string; responses: Buffer }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      if (!authorised(call.metadata)) return cb(status(grpc.status.UNAUTHENTICATED, 'missing or wrong token'));
      if (!d.isAccepting()) return cb(status(grpc.status.UNAVAILABLE, 'server is shutting down'));
      let served: ServedModel;
      let raw: Float32Array;
      try {
        served = d.registry.get(call.request.model);
        raw = decodeResponses(call.request.responses, served.name, served.neurons);
      } catch (e) {
        if (!(e instanceof CortexcastError)) throw e;
        d.metrics.framesRejected.inc({ reason: reasonOf(e) });
        return cb(status(e.code === 'CC_ERR_UNKNOWN_MODEL' ? grpc.status.NOT_FOUND : grpc.status.INVALID_ARGUMENT, e.message));
      }
      const model = served.name;
      const deadline = call.getDeadline();
      const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
      const waitMs = Math.min(d.cfg.limits.maxDecodeWaitMs, Number.isFinite(deadlineMs) ? deadlineMs - Date.now() : Infinity);
      const t0 = now();
      const cancel = d.scheduler.submitUnary(
        {
          model,
          raw,
          ingestedMs: t0,
          settle: (o) => {
            if (o.status === 'DECODED') {
              d.metrics.unaryDecodes.inc({ model, code: 'OK' });
              const v = o.values;
              return cb(null, {
                width: o.served.width,
                height: o.served.height,
                pixels: Buffer.from(toGrey(v, o.served.bundle)),
                values: Buffer.from(v.buffer, v.byteOffset, v.byteLength),
                decodeUs: Math.round((o.endMs - o.startMs) * 1000),
                provider: o.served.provider,
              });
            }
            const code = UNARY_STATUS[o.reason];
            d.metrics.unaryDecodes.inc({ model, code: grpc.status[code] });
            cb(status(code, `${o.reason}: ${o.detail}`));
          },
        },
        waitMs,
      );
      // grpc-js reports a passed deadline as a cancellation: tell the two apart for the metric.
      call.on('cancelled', () => cancel(Date.now() >= deadlineMs - 2 ? 'deadline' : 'cancelled'));
    }),

    ListModels: guardUnary('ListModels', (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      if (!authorised(call.metadata)) return cb(status(grpc.status.UNAUTHENTICATED, 'missing or wrong token'));
      cb(null, { models: d.registry.all().map(modelInfo) });
    }),

    GetModel: guardUnary('GetModel', (call: grpc.ServerUnaryCall<{ name: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      if (!authorised(call.metadata)) return cb(status(grpc.status.UNAUTHENTICATED, 'missing or wrong token'));
      if (!d.registry.has(call.request.name)) return cb(status(grpc.status.NOT_FOUND, ccError('CC_ERR_UNKNOWN_MODEL', quoted(call.request.name), d.registry.all().map((m) => m.name).join(', ') || 'none').message));
      cb(null, modelInfo(d.registry.get(call.request.name)));
    }),

    ReloadModels: guardUnary('ReloadModels', (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      if (!authorised(call.metadata)) return cb(status(grpc.status.UNAUTHENTICATED, 'missing or wrong token'));
      d.reload().then(
        () => cb(null, { models: d.registry.all().map(modelInfo) }),
        (e: Error) => cb(status(d.isAccepting() ? grpc.status.FAILED_PRECONDITION : grpc.status.UNAVAILABLE, `reload failed, previous models still serve: ${e.message}`)),
      );
    }),
  };
}
