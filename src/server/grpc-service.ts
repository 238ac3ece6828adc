import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { ccError, quoted } from '../common/errors.js';
import type { ServerConfig } from './config.js';
import { decodeResponses, now, toGrey, type DecodedFrame } from './frames.js';
import type { ServerMetrics } from './metrics.js';
import { modelFacts, type ModelRegistry, type ServedModel } from './model-registry.js';
import type { DecodeScheduler } from './scheduler.js';
import { metadataAuthorised, UNAUTHENTICATED_DETAILS } from './auth.js';
import { guardDeserializers, RateLimitedLog, type TransportFailures } from './wire-guard.js';
import { IngestCall, type AckMsg, type ResponseFrameMsg, type StreamOwners } from './ingest-call.js';
import { dropStatus, guardUnary, status, unaryWait } from './unary.js';

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
  /** Open ingest calls (the server ends them on shutdown, once their accepted frames have acks). */
  openStreams: Map<grpc.ServerDuplexStream<unknown, unknown>, { shutdown(settleMs: number, flushMs: () => number): Promise<void> }>;
  reload: () => Promise<void>;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

/**
 * What a client needs to know of a bundle's manifest, and nothing of where it came from: no file
 * paths (bundle, training data, quantization source), no host names, no training configuration.
 */
export function manifestSummary(m: ServedModel): Record<string, unknown> {
  const man = m.bundle.manifest;
  const window = (man as { responseWindow?: unknown }).responseWindow;
  return {
    format: man.format,
    formatVersion: man.formatVersion,
    name: man.name,
    kind: man.kind,
    createdAt: man.createdAt,
    input: { neurons: man.input.neurons, unitIds: m.bundle.unitIds.length, responseScaling: man.input.responseScaling, transform: man.input.transform },
    output: { width: man.output.width, height: man.output.height, pixelMean: man.output.pixelMean, pixelStd: man.output.pixelStd },
    onnx: { opset: man.onnx.opset, sha256: man.onnx.sha256 },
    ...(man.iterative ? { iterative: { steps: m.steps ?? man.iterative.steps, lr: man.iterative.lr, blurSigma: man.iterative.blurSigma } } : {}),
    ...(window !== undefined ? { responseWindow: window } : {}),
    ...(man.precision ? { precision: { weights: man.precision.weights, activations: man.precision.activations, validation: man.precision.validation } } : {}),
    metrics: man.metrics,
    ...(man.training.seconds !== undefined ? { training: { seconds: man.training.seconds } } : {}),
    provenance: { cortexcast: man.provenance.cortexcast, onnxruntime: man.provenance.onnxruntime },
  };
}

/** The gRPC Decoder service: per-call auth, validation with precise statuses, every frame into the one scheduler. */
// Over 80 lines: the service's handler table, one short entry per RPC of cortexcast.v1.
export function decoderService(d: ServiceDeps, transport: TransportFailures): grpc.UntypedServiceImplementation {
  // bundle_path stays empty: where the server keeps its files is not the client's business.
  const modelInfo = (m: ServedModel): Record<string, unknown> => ({ ...modelFacts(m), bundlePath: '', manifestJson: JSON.stringify(manifestSummary(m)) });
  const warnings = new RateLimitedLog(d.log);
  const owners: StreamOwners = new Map();

  const unary = { token: d.cfg.auth.token, metrics: d.metrics, log: d.log };
  let reloading: Promise<void> | undefined;
  let lastReloadEnd = -Infinity;

  return {
    StreamFrames(call: grpc.ServerDuplexStream<ResponseFrameMsg, AckMsg>) {
      if (!metadataAuthorised(call.metadata, d.cfg.auth.token)) {
        d.metrics.framesRejected.inc({ reason: 'unauthenticated' });
        call.emit('error', status(grpc.status.UNAUTHENTICATED, UNAUTHENTICATED_DETAILS));
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
      if (ingest.isOpen) {
        openStreams.set(key, ingest);
        d.metrics.streams.set(openStreams.size);
      }
    },

    Decode: guardUnary(unary, 'Decode', (call: grpc.ServerUnaryCall<{ model: string; responses: Buffer }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      if (!d.isAccepting()) return cb(status(grpc.status.UNAVAILABLE, 'server is shutting down'));
      const served = d.registry.get(call.request.model);
      const raw = decodeResponses(call.request.responses, served.name, served.neurons);
      const model = served.name;
      const { waitMs, cancelReason } = unaryWait(call, d.cfg.limits.maxDecodeWaitMs);
      const cancel = d.scheduler.submitUnary(
        {
          model,
          raw,
          ingestedMs: now(),
          settle: (o) => {
            if (o.status !== 'DECODED') return cb(dropStatus(d.metrics, model, o));
            d.metrics.unaryDecodes.inc({ model, code: 'OK' });
            const v = o.values;
            cb(null, {
              width: o.served.width,
              height: o.served.height,
              pixels: Buffer.from(toGrey(v, o.served.bundle)),
              values: Buffer.from(v.buffer, v.byteOffset, v.byteLength),
              decodeUs: Math.round((o.endMs - o.startMs) * 1000),
              provider: o.served.provider,
            });
          },
        },
        waitMs,
      );
      call.on('cancelled', () => cancel(cancelReason()));
    }),

    ListModels: guardUnary(unary, 'ListModels', (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      cb(null, { models: d.registry.all().map(modelInfo) });
    }),

    GetModel: guardUnary(unary, 'GetModel', (call: grpc.ServerUnaryCall<{ name: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      if (!d.registry.has(call.request.name)) return cb(status(grpc.status.NOT_FOUND, ccError('CC_ERR_UNKNOWN_MODEL', quoted(call.request.name), d.registry.all().map((m) => m.name).join(', ') || 'none').message));
      cb(null, modelInfo(d.registry.get(call.request.name)));
    }),

    // The admin token is checked by the call guard before this runs. One reload at a time (callers
    // meanwhile share it), and none sooner than minReloadIntervalMs after the last: each builds a
    // new worker pool per model while the old ones drain.
    ReloadModels: guardUnary(unary, 'ReloadModels', (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      if (!reloading) {
        const since = Date.now() - lastReloadEnd;
        if (since < d.cfg.limits.minReloadIntervalMs) {
          d.metrics.callsRefused.inc({ reason: 'reload_rate' });
          return cb(status(grpc.status.RESOURCE_EXHAUSTED, ccError('CC_ERR_RELOAD_RATE', since, d.cfg.limits.minReloadIntervalMs).message));
        }
        reloading = d.reload().finally(() => {
          reloading = undefined;
          lastReloadEnd = Date.now();
        });
      }
      reloading.then(
        () => cb(null, { models: d.registry.all().map(modelInfo) }),
        (e: Error) => cb(status(d.isAccepting() ? grpc.status.FAILED_PRECONDITION : grpc.status.UNAVAILABLE, `reload failed, previous models still serve: ${e.message}`)),
      );
    }),
  };
}
