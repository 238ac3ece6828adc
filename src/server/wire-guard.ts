import * as grpc from '@grpc/grpc-js';
import { ccError } from '../common/errors.js';

/**
 * What stands between the gRPC transport and the handlers: message size and protobuf validity
 * checked per message (so a bad message costs one ack, not the stream), grpc-js's own transport
 * failures given cortexcast's codes and counted, unary requests that never finish arriving timed
 * out, and warnings about bad input rate-limited so bad input cannot flood the log.
 */

/** A message the handler must refuse, in place of the decoded request. */
export interface BadMessage {
  kind: 'oversized' | 'malformed';
  /** The CC_ERR_... message for the client. */
  message: string;
  /** The frame's sequence when it could still be read (oversized frames), else '0'. */
  sequence: string;
}

export const BAD_MESSAGE = Symbol('cortexcast bad message');

/** Each kind's label in cortexcast_frames_rejected_total{reason}. */
export const BAD_MESSAGE_REASON: Record<BadMessage['kind'], string> = { oversized: 'message_too_large', malformed: 'malformed_frame' };
type Guarded = { [BAD_MESSAGE]: BadMessage };

export function badMessageOf(req: unknown): BadMessage | undefined {
  return req && typeof req === 'object' && BAD_MESSAGE in req ? (req as Guarded)[BAD_MESSAGE] : undefined;
}

/**
 * The transport's own limit: grpc-js ends a call whose message is larger, before any handler sees
 * it, so it sits above limits.maxMessageBytes (which handlers enforce per message) and only guards
 * memory against messages that are absurdly large.
 */
export const transportLimit = (maxMessageBytes: number): number => 2 * maxMessageBytes + 64 * 1024;

/** Wrap every method's request deserializer: size first, then protobuf validity. */
export function guardDeserializers(service: grpc.ServiceDefinition, maxMessageBytes: number): grpc.ServiceDefinition {
  const out: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
  for (const [name, method] of Object.entries(service)) {
    const decode = method.requestDeserialize;
    out[name] = {
      ...method,
      requestDeserialize: (bytes: Buffer): unknown => {
        if (bytes.length > maxMessageBytes) {
          let sequence = '0';
          try {
            sequence = String((decode(bytes) as { sequence?: unknown }).sequence ?? '0');
          } catch {
            // an oversized message that is also not valid protobuf: no sequence to echo
          }
          return { [BAD_MESSAGE]: { kind: 'oversized', message: ccError('CC_ERR_MESSAGE_TOO_LARGE', bytes.length, 'limits.maxMessageBytes', maxMessageBytes).message, sequence } } satisfies Guarded;
        }
        try {
          return decode(bytes);
        } catch (e) {
          return { [BAD_MESSAGE]: { kind: 'malformed', message: ccError('CC_ERR_MALFORMED_FRAME', (e as Error).message || 'undecodable protobuf').message, sequence: '0' } } satisfies Guarded;
        }
      },
    };
  }
  return out as grpc.ServiceDefinition;
}

/** At most one line per `everyMs` per key; the next line says how many were left out. */
export class RateLimitedLog {
  private last = new Map<string, { at: number; suppressed: number }>();
  constructor(
    private readonly log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void,
    private readonly everyMs = 1000,
  ) {}

  warn(key: string, msg: string, fields: Record<string, unknown> = {}): void {
    const now = Date.now();
    const s = this.last.get(key);
    if (s && now - s.at < this.everyMs) {
      s.suppressed++;
      return;
    }
    this.log('warn', msg, s?.suppressed ? { ...fields, suppressed: s.suppressed } : fields);
    this.last.set(key, { at: now, suppressed: 0 });
  }
}

type TransportFailureKind = 'oversized' | 'undecompressible' | 'request_timeout';
type StatusOut = Parameters<grpc.ServerInterceptingCallInterface['sendStatus']>[0];

/**
 * grpc-js ends a call itself when a message is over the transport limit or cannot be decompressed,
 * below the handler and past every interceptor hook. This interceptor gives those statuses
 * cortexcast's codes, reports them, and for StreamFrames holds the status back until the handler
 * has written the acks of the frames it read (the handler registers through the id this puts in
 * the call's metadata). It also ends a unary call whose request has not fully arrived within
 * requestTimeoutMs, which grpc-js would otherwise hold open forever.
 */
export class TransportFailures {
  private hooks = new Map<string, (details: string, send: () => void) => void>();
  private nextId = 1;
  static readonly METADATA_KEY = 'x-cortexcast-call';

  constructor(
    private readonly streamingPaths: ReadonlySet<string>,
    private readonly limits: { transportBytes: number; requestTimeoutMs: number },
    private readonly onFailure: (kind: TransportFailureKind, method: string, details: string) => void,
    /** Every request message grpc-js read and deserialised (what a refused call must never cost). */
    private readonly onMessage: () => void = () => undefined,
  ) {}

  readonly interceptor: grpc.ServerInterceptor = (method, call) => {
    const streaming = this.streamingPaths.has(method.path);
    const id = String(this.nextId++);
    const sendStatus = call.sendStatus.bind(call);
    let seen = false;
    call.sendStatus = (s: StatusOut): void => {
      const translated = this.translate(s);
      if (translated) {
        // The decoder repeats its error on every later data frame: act on the first only.
        if (seen) return;
        seen = true;
        this.onFailure(translated.kind, method.path, translated.status.details);
        const hook = streaming ? this.hooks.get(id) : undefined;
        if (hook) return hook(translated.status.details, () => sendStatus(translated.status));
        return sendStatus(translated.status);
      }
      sendStatus(s);
    };
    let timer: NodeJS.Timeout | undefined;
    if (!method.requestStream) {
      timer = setTimeout(() => {
        const details = `request not complete within ${this.limits.requestTimeoutMs} ms (limits.requestTimeoutMs)`;
        this.onFailure('request_timeout', method.path, details);
        sendStatus({ code: grpc.status.DEADLINE_EXCEEDED, details });
      }, this.limits.requestTimeoutMs);
      timer.unref();
    }
    return new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (md, nextMd) => {
            if (streaming) md.set(TransportFailures.METADATA_KEY, id);
            nextMd(md);
          },
          onReceiveMessage: (message, nextMessage) => {
            this.onMessage();
            nextMessage(message);
          },
          onReceiveHalfClose: (nextHalfClose) => {
            clearTimeout(timer);
            nextHalfClose();
          },
          onCancel: () => clearTimeout(timer),
        }),
    });
  };

  private translate(s: StatusOut): { kind: TransportFailureKind; status: StatusOut } | undefined {
    if (s.code === grpc.status.RESOURCE_EXHAUSTED && /larger than max|decompresses to a size larger than/.test(s.details)) {
      const bytes = /\((\d+) vs/.exec(s.details)?.[1] ?? `over ${this.limits.transportBytes}`;
      const details = `${ccError('CC_ERR_MESSAGE_TOO_LARGE', bytes, 'the transport limit, 2 x limits.maxMessageBytes + 64 KiB', this.limits.transportBytes).message}; gRPC cannot read past it, so the call ends`;
      return { kind: 'oversized', status: { ...s, details } };
    }
    // A message flagged compressed under a grpc-encoding grpc-js does not know: the same, for the client.
    if (s.code === grpc.status.UNIMPLEMENTED && /compressed with unsupported encoding/.test(s.details))
      return { kind: 'undecompressible', status: { ...s, code: grpc.status.INVALID_ARGUMENT, details: ccError('CC_ERR_MALFORMED_FRAME', 'message compressed with an unsupported grpc-encoding').message } };
    if (s.code === grpc.status.INTERNAL && /Failed to decompress message/.test(s.details))
      return { kind: 'undecompressible', status: { ...s, code: grpc.status.INVALID_ARGUMENT, details: ccError('CC_ERR_MALFORMED_FRAME', 'compressed message could not be decompressed').message } };
    return undefined;
  }

  register(md: grpc.Metadata, hook: (details: string, send: () => void) => void): () => void {
    const id = String(md.get(TransportFailures.METADATA_KEY)[0] ?? '');
    if (!id) return () => undefined;
    this.hooks.set(id, hook);
    return () => this.hooks.delete(id);
  }
}
