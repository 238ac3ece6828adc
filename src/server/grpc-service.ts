import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { CortexcastError } from '../common/errors.js';
import { applyResponseTransform } from '../models/bundle.js';
import type { ServerConfig } from './config.js';
import { decodeResponses, decodeStimulus, now, toGrey, type FrameOutcome, type Stimulus } from './frames.js';
import type { ServerMetrics } from './metrics.js';
import { modelFacts, type ModelRegistry, type ServedModel } from './model-registry.js';
import type { DecodePipeline } from './pipeline.js';
import { tokenMatches } from './auth.js';

export const PROTO_PATH = fileURLToPath(new URL('../../proto/cortexcast/v1/decoder.proto', import.meta.url));

export function loadProto(): { pkg: protoLoader.PackageDefinition; service: grpc.ServiceDefinition } {
  const pkg = protoLoader.loadSync(PROTO_PATH, { keepCase: false, longs: Number, enums: String, defaults: true, oneofs: true });
  const loaded = grpc.loadPackageDefinition(pkg) as unknown as { cortexcast: { v1: { Decoder: { service: grpc.ServiceDefinition } } } };
  return { pkg, service: loaded.cortexcast.v1.Decoder.service };
}

interface ResponseFrameMsg {
  streamId: string;
  model: string;
  sequence: number;
  acquiredAtUs: number;
  responses: Buffer;
  unitIds: number[];
  imageId: number;
  stimulus: Buffer;
  stimulusWidth: number;
  stimulusHeight: number;
}

interface AckMsg {
  sequence: number;
  status: 'ACCEPTED' | 'DECODED' | 'DROPPED' | 'REJECTED';
  reason: string;
  decodeUs: number;
  provider: string;
}

export interface ServiceDeps {
  cfg: ServerConfig;
  registry: ModelRegistry;
  pipeline: DecodePipeline;
  metrics: ServerMetrics;
  isAccepting: () => boolean;
  /** Open ingest calls (the server ends them on shutdown). */
  openStreams: Set<grpc.ServerDuplexStream<unknown, unknown>>;
  reload: () => Promise<void>;
  log: (level: 'info' | 'warn', msg: string, fields?: Record<string, unknown>) => void;
}

const STREAM_ID = /^[\x21-\x7e]{1,128}$/;

const status = (code: grpc.status, details: string): grpc.ServiceError => Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });

/** The gRPC Decoder service: per-call auth, validation with precise statuses, frames into the pipeline. */
export function decoderService(d: ServiceDeps): grpc.UntypedServiceImplementation {
  const authorised = (md: grpc.Metadata): boolean => {
    const token = d.cfg.auth.token;
    if (!token) return true;
    const h = String(md.get('authorization')[0] ?? '');
    return tokenMatches(h.replace(/^Bearer\s+/i, ''), token);
  };
  const reject = (reason: string): void => void d.metrics.framesRejected.inc({ reason });
  const modelInfo = (m: ServedModel): Record<string, unknown> => ({ ...modelFacts(m), bundlePath: m.bundle.dir, manifestJson: JSON.stringify(m.bundle.manifest) });
  const lookup = (name: string): ServedModel => d.registry.get(name);
  const codeOf = (e: unknown): string => (e instanceof CortexcastError ? e.code.replace(/^CC_ERR_/, '').toLowerCase() : 'internal');

  return {
    StreamFrames(call: grpc.ServerDuplexStream<ResponseFrameMsg, AckMsg>) {
      if (!authorised(call.metadata)) {
        reject('unauthenticated');
        call.emit('error', status(grpc.status.UNAUTHENTICATED, 'missing or wrong token (metadata authorization: Bearer <token>)'));
        return;
      }
      if (!d.isAccepting()) {
        call.emit('error', status(grpc.status.UNAVAILABLE, 'server is shutting down'));
        return;
      }
      const openStreams = d.openStreams;
      if (openStreams.size >= d.cfg.limits.maxStreams) {
        reject('too_many_streams');
        call.emit('error', status(grpc.status.RESOURCE_EXHAUSTED, `stream limit reached (${d.cfg.limits.maxStreams}); raise limits.maxStreams`));
        return;
      }
      openStreams.add(call as grpc.ServerDuplexStream<unknown, unknown>);
      d.metrics.streams.set(openStreams.size);
      const seen = new Set<string>();
      let open = true;
      let unsettled = 0;
      let halfClosed = false;
      // After the client half-closes, the call ends once every frame it sent has its final ack.
      const endIfDone = (): void => {
        if (halfClosed && unsettled === 0 && open) {
          finish();
          call.end();
        }
      };
      const ack = (a: AckMsg): void => {
        // Acks are advice: when the client stops reading them, DECODED/DROPPED acks are skipped, rejections never.
        if (!open || (call.writableNeedDrain && a.status !== 'REJECTED')) return;
        call.write(a);
      };
      const finish = (): void => {
        if (!open) return;
        open = false;
        d.openStreams.delete(call as grpc.ServerDuplexStream<unknown, unknown>);
        d.metrics.streams.set(d.openStreams.size);
        for (const s of seen) d.pipeline.dropStream(s);
      };
      call.on('data', (m: ResponseFrameMsg) => {
        const ingestedMs = now();
        const fail = (reason: string, e?: unknown): void => {
          reject(e ? codeOf(e) : reason);
          ack({ sequence: m.sequence, status: 'REJECTED', reason: e ? (e as Error).message : reason, decodeUs: 0, provider: '' });
        };
        if (!STREAM_ID.test(m.streamId)) return fail('invalid_stream_id', new Error('stream_id must be 1-128 printable ASCII characters without spaces'));
        let served: ServedModel;
        try {
          served = lookup(m.model);
        } catch (e) {
          return fail('unknown_model', e);
        }
        let raw: Float32Array;
        try {
          raw = decodeResponses(m.responses, served.name, served.neurons);
        } catch (e) {
          return fail('', e);
        }
        let stimulus: Stimulus | undefined;
        try {
          stimulus = decodeStimulus(m.stimulus, m.stimulusWidth, m.stimulusHeight);
        } catch (e) {
          return fail('stimulus', e);
        }
        if (m.unitIds.length && (m.unitIds.length !== served.neurons || m.unitIds.some((u, i) => u !== served.bundle.unitIds[i])))
          return fail('unit_ids', new Error(`unit_ids differ from model ${served.name}'s neuron order (${served.neurons} units)`));
        seen.add(m.streamId);
        unsettled++;
        d.metrics.framesReceived.inc({ model: served.name });
        d.pipeline.submit({
          streamId: m.streamId,
          model: served.name,
          sequence: m.sequence,
          acquiredMs: m.acquiredAtUs ? m.acquiredAtUs / 1000 : undefined,
          ingestedMs,
          imageId: m.imageId || undefined,
          stimulus,
          input: applyResponseTransform(raw, served.bundle.stdScale, served.bundle.manifest.input.transform, raw),
          settle: (o: FrameOutcome) => {
            ack({ sequence: m.sequence, status: o.status, reason: 'reason' in o ? o.reason : '', decodeUs: 'decodeUs' in o ? o.decodeUs : 0, provider: 'provider' in o ? o.provider : '' });
            unsettled--;
            endIfDone();
          },
        });
      });
      call.on('end', () => {
        halfClosed = true;
        endIfDone();
      });
      call.on('cancelled', finish);
      call.on('error', finish);
      call.on('close', finish);
    },

    Decode(call: grpc.ServerUnaryCall<{ model: string; responses: Buffer }, unknown>, cb: grpc.sendUnaryData<unknown>) {
      if (!authorised(call.metadata)) return cb(status(grpc.status.UNAUTHENTICATED, 'missing or wrong token'));
      let served: ServedModel;
      let raw: Float32Array;
      try {
        served = lookup(call.request.model);
      } catch (e) {
        reject('unknown_model');
        return cb(status(grpc.status.NOT_FOUND, (e as Error).message));
      }
      try {
        raw = decodeResponses(call.request.responses, served.name, served.neurons);
      } catch (e) {
        reject(codeOf(e));
        return cb(status(grpc.status.INVALID_ARGUMENT, (e as Error).message));
      }
      const input = applyResponseTransform(raw, served.bundle.stdScale, served.bundle.manifest.input.transform, raw);
      const attempt = (): void => {
        const run = served.pool.tryRun(input, 1);
        if (!run) return void setTimeout(attempt, 1);
        run.then(
          (r) =>
            cb(null, {
              width: served.width,
              height: served.height,
              pixels: Buffer.from(toGrey(r.output, served.bundle)),
              values: Buffer.from(r.output.buffer, r.output.byteOffset, r.output.byteLength),
              decodeUs: Math.round((r.endMs - r.startMs) * 1000),
              provider: served.provider,
            }),
          (e: Error) => cb(status(grpc.status.INTERNAL, `decode failed: ${e.message}`)),
        );
      };
      attempt();
    },

    ListModels(call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) {
      if (!authorised(call.metadata)) return cb(status(grpc.status.UNAUTHENTICATED, 'missing or wrong token'));
      cb(null, { models: d.registry.all().map(modelInfo) });
    },

    GetModel(call: grpc.ServerUnaryCall<{ name: string }, unknown>, cb: grpc.sendUnaryData<unknown>) {
      if (!authorised(call.metadata)) return cb(status(grpc.status.UNAUTHENTICATED, 'missing or wrong token'));
      try {
        cb(null, modelInfo(lookup(call.request.name)));
      } catch (e) {
        cb(status(grpc.status.NOT_FOUND, (e as Error).message));
      }
    },

    ReloadModels(call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) {
      if (!authorised(call.metadata)) return cb(status(grpc.status.UNAUTHENTICATED, 'missing or wrong token'));
      d.reload().then(
        () => cb(null, { models: d.registry.all().map(modelInfo) }),
        (e: Error) => cb(status(grpc.status.FAILED_PRECONDITION, `reload failed, previous models still serve: ${e.message}`)),
      );
    },
  };
}
