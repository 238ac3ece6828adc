import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { fileURLToPath } from 'node:url';
import { ccError, CortexcastError, quoted } from '../common/errors.js';
import type { ServerConfig } from './config.js';
import { decodeResponses, decodeStimulus, now, toGrey, type DecodedFrame, type Stimulus } from './frames.js';
import type { ServerMetrics } from './metrics.js';
import { modelFacts, type ModelRegistry, type ServedModel } from './model-registry.js';
import type { DecodeOutcome, DecodeScheduler, DropReason } from './scheduler.js';
import { tokenMatches } from './auth.js';
import { badMessageOf, guardDeserializers, RateLimitedLog, type TransportFailures } from './wire-guard.js';

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

interface ResponseFrameMsg {
  streamId: string;
  model: string;
  sequence: string;
  acquiredAtUs: string;
  responses: Buffer;
  unitIds: string[];
  imageId: string;
  stimulus: Buffer;
  stimulusWidth: number;
  stimulusHeight: number;
}

interface AckMsg {
  sequence: string;
  status: 'ACCEPTED' | 'DECODED' | 'DROPPED' | 'REJECTED';
  reason: string;
  decodeUs: number;
  provider: string;
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

const STREAM_ID = /^[\x21-\x7e]{1,128}$/;
/** acquired_at_us further than this from the server's clock is a clock problem, not latency. */
const CLOCK_PAST_MS = 60_000;
const CLOCK_FUTURE_MS = 1_000;

/** Details travel in a trailer: kept short, whatever a message echoes. */
export const status = (code: grpc.status, text: string): grpc.ServiceError => {
  const details = text.length > 1024 ? `${text.slice(0, 1024)}...` : text;
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
};

/** A stream frame's error code as its metric label: CC_ERR_NOT_FINITE -> not_finite. */
const reasonOf = (e: unknown): string => (e instanceof CortexcastError ? e.code.replace(/^CC_ERR_/, '').toLowerCase() : 'internal');

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
  /** Stream id -> the call that owns it, and the last sequence accepted on it. */
  const owners = new Map<string, { owner: object; lastSequence: bigint }>();

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
      const self = {};
      const peer = call.getPeer();
      openStreams.add(call as grpc.ServerDuplexStream<unknown, unknown>);
      d.metrics.streams.set(openStreams.size);
      const owned = new Set<string>();
      let open = true;
      let unsettled = 0;
      let halfClosed = false;
      /** Set when the call is being ended by the server: later messages are ignored. */
      let ending = false;
      let paused = false;
      /** Called on every settle while the call waits for its last acks before ending. */
      let settledHook: (() => void) | undefined;

      const finish = (): void => {
        if (!open) return;
        open = false;
        clearTimeout(idle);
        unregister();
        d.openStreams.delete(call as grpc.ServerDuplexStream<unknown, unknown>);
        d.metrics.streams.set(d.openStreams.size);
        for (const s of owned) {
          if (owners.get(s)?.owner === self) owners.delete(s);
          d.scheduler.dropStream(s);
        }
      };
      /** End the call with a status once every accepted frame has its ack written (or after waitMs). */
      const endWith = (err: grpc.ServiceError | undefined, waitMs: number, send?: () => void): void => {
        ending = true;
        clearTimeout(idle);
        const go = (): void => {
          if (send) send();
          else if (!open) return;
          else if (err) call.emit('error', err);
          else call.end();
          finish();
        };
        if (unsettled === 0) return go();
        const timer = setTimeout(go, waitMs);
        timer.unref();
        settledHook = () => {
          if (unsettled === 0) {
            clearTimeout(timer);
            go();
          }
        };
      };
      const endIfDone = (): void => {
        settledHook?.();
        // After an oversized message the held RESOURCE_EXHAUSTED ends the call, never an OK.
        if (halfClosed && unsettled === 0 && open && !ending && !oversized) endWith(undefined, 0);
      };
      // Acks are the contract (one per frame): when the client reads them slower than they come,
      // stop reading its frames until the acks drain, instead of skipping acks or buffering them.
      const ack = (a: AckMsg): void => {
        if (!open) return;
        if (!call.write(a) && !paused) {
          paused = true;
          // The rig is not idle while we hold its frames back; but one that never reads its acks
          // would hold a stream slot forever: it gets streamIdleMs to start reading again.
          clearTimeout(idle);
          const stalled = idleMs ? setTimeout(() => {
            d.log('info', 'stream closed: acks unread', { peer, streams: [...owned], idleMs });
            ending = true;
            call.emit('error', status(grpc.status.UNAVAILABLE, `acks not read for ${idleMs} ms (limits.streamIdleMs): stream closed`));
          }, idleMs) : undefined;
          stalled?.unref();
          call.pause();
          call.once('drain', () => {
            clearTimeout(stalled);
            paused = false;
            if (!open) return;
            call.resume();
            if (!ending) touch();
          });
        }
      };
      const idleMs = d.cfg.limits.streamIdleMs;
      let idle: NodeJS.Timeout | undefined;
      const touch = (): void => {
        if (!idleMs) return;
        clearTimeout(idle);
        idle = setTimeout(() => {
          d.log('info', 'idle stream closed', { peer, streams: [...owned], idleMs });
          endWith(status(grpc.status.UNAVAILABLE, `no frame for ${idleMs} ms (limits.streamIdleMs): stream closed`), 1000);
        }, idleMs);
        idle.unref();
      };
      touch();
      // An oversized message: grpc-js cannot read past it, but frames that came before it may still
      // be on their way to this handler. Take those, let every accepted frame settle, then send the
      // held RESOURCE_EXHAUSTED (at most 2 s later).
      let quiet: NodeJS.Timeout | undefined;
      const unregister = transport.register(call.metadata, (_details, send) => {
        clearTimeout(idle);
        oversized = true;
        const force = setTimeout(() => go(), 2000);
        force.unref();
        const go = (): void => {
          clearTimeout(force);
          clearTimeout(quiet);
          settledHook = undefined;
          send();
          finish();
        };
        const check = (): void => {
          clearTimeout(quiet);
          quiet = setTimeout(() => unsettled === 0 && go(), 25);
        };
        afterData = check;
        settledHook = () => unsettled === 0 && check();
        check();
      });
      let afterData: (() => void) | undefined;
      /** Set once grpc-js refused an oversized message: no idle timer, and the call ends with that status. */
      let oversized = false;

      const onFrame = (m: ResponseFrameMsg): void => {
        if (ending || !open) return;
        if (!oversized) touch();
        const ingestedMs = now();
        const bad = badMessageOf(m);
        if (bad) {
          d.metrics.framesRejected.inc({ reason: bad.kind === 'oversized' ? 'message_too_large' : 'malformed_frame' });
          warnings.warn(bad.kind, bad.kind === 'oversized' ? 'oversized frame rejected' : 'malformed frame rejected', { peer, error: bad.message });
          return ack({ sequence: bad.sequence, status: 'REJECTED', reason: bad.message, decodeUs: 0, provider: '' });
        }
        const fail = (e: CortexcastError): void => {
          d.metrics.framesRejected.inc({ reason: reasonOf(e) });
          ack({ sequence: m.sequence, status: 'REJECTED', reason: e.message, decodeUs: 0, provider: '' });
        };
        if (!STREAM_ID.test(m.streamId)) return fail(ccError('CC_ERR_STREAM_ID', quoted(m.streamId, 40), 'must be 1-128 printable ASCII characters without spaces'));
        const owner = owners.get(m.streamId);
        if (owner && owner.owner !== self) return fail(ccError('CC_ERR_STREAM_IN_USE', m.streamId));
        const sequence = BigInt(m.sequence);
        if (sequence === 0n) return fail(ccError('CC_ERR_SEQUENCE', '0', 'sequence numbers start at 1'));
        if (owner && sequence <= owner.lastSequence)
          return fail(ccError('CC_ERR_SEQUENCE', m.sequence, `not after ${owner.lastSequence}, the last accepted frame of stream ${m.streamId} (sequences increase strictly)`));
        let served: ServedModel;
        let raw: Float32Array;
        let stimulus: Stimulus | undefined;
        try {
          served = d.registry.get(m.model);
          raw = decodeResponses(m.responses, served.name, served.neurons);
          stimulus = decodeStimulus(m.stimulus, m.stimulusWidth, m.stimulusHeight);
          if (m.unitIds.length) {
            const ids = served.bundle.unitIds;
            const at = m.unitIds.length !== served.neurons ? -1 : m.unitIds.findIndex((u, i) => u !== String(ids[i]));
            if (m.unitIds.length !== served.neurons) throw ccError('CC_ERR_UNIT_IDS', served.name, served.neurons, `the frame lists ${m.unitIds.length}`);
            if (at >= 0) throw ccError('CC_ERR_UNIT_IDS', served.name, served.neurons, `first difference at position ${at} (${m.unitIds[at]} vs ${ids[at]})`);
          }
        } catch (e) {
          if (e instanceof CortexcastError) return fail(e);
          throw e;
        }
        if (!owner && owned.size >= d.cfg.limits.maxStreamIdsPerCall)
          return fail(ccError('CC_ERR_STREAM_ID', quoted(m.streamId, 40), `this call already owns ${owned.size} stream ids (limits.maxStreamIdsPerCall)`));
        if (!owner) {
          owners.set(m.streamId, { owner: self, lastSequence: sequence });
          owned.add(m.streamId);
        } else owner.lastSequence = sequence;
        const acquiredUs = Number(m.acquiredAtUs);
        const acquiredMs = acquiredUs ? acquiredUs / 1000 : undefined;
        let clockOk = acquiredMs !== undefined;
        if (acquiredMs !== undefined && (acquiredMs < ingestedMs - CLOCK_PAST_MS || acquiredMs > ingestedMs + CLOCK_FUTURE_MS)) {
          clockOk = false;
          d.metrics.clockProblems.inc({ model: served.name, kind: acquiredMs > ingestedMs ? 'future' : 'past' });
        }
        const imageId = Number(m.imageId);
        unsettled++;
        d.metrics.framesReceived.inc({ model: served.name });
        const model = served.name;
        d.scheduler.submitFrame(m.streamId, {
          model,
          raw,
          ingestedMs,
          label: `frame ${m.sequence}`,
          settle: (o: DecodeOutcome) => {
            unsettled--;
            if (o.status === 'DECODED') {
              const s = o.served;
              d.publish({
                streamId: m.streamId,
                model,
                sequence: m.sequence,
                imageId: imageId || undefined,
                stimulus,
                acquiredMs,
                acquiredPlausible: clockOk,
                ingestedMs,
                decodeStartMs: o.startMs,
                decodeEndMs: o.endMs,
                provider: s.provider,
                width: s.width,
                height: s.height,
                pixels: toGrey(o.values, s.bundle),
                values: o.values,
              });
              d.metrics.framesDecoded.inc({ model });
              ack({ sequence: m.sequence, status: 'DECODED', reason: '', decodeUs: Math.round((o.endMs - o.startMs) * 1000), provider: s.provider });
            } else {
              d.metrics.framesDropped.inc({ model, reason: o.reason });
              ack({ sequence: m.sequence, status: 'DROPPED', reason: `${o.reason}: ${o.detail}`, decodeUs: 0, provider: '' });
            }
            endIfDone();
          },
        });
      };

      call.on('data', (m: ResponseFrameMsg) => {
        try {
          onFrame(m);
          afterData?.();
        } catch (e) {
          d.log('error', 'frame handler failed', { peer, error: (e as Error).stack ?? String(e) });
          d.metrics.framesRejected.inc({ reason: 'internal' });
          if (open) ack({ sequence: String(m.sequence ?? '0'), status: 'REJECTED', reason: 'internal error while validating the frame', decodeUs: 0, provider: '' });
        }
      });
      call.on('end', () => {
        halfClosed = true;
        endIfDone();
      });
      call.on('cancelled', finish);
      call.on('error', finish);
      call.on('close', finish);
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
