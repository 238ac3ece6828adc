import * as grpc from '@grpc/grpc-js';
import { CortexcastError } from '../common/errors.js';
import { metadataAuthorised, UNAUTHENTICATED_DETAILS } from './auth.js';
import type { ServerMetrics } from './metrics.js';
import type { DecodeOutcome, DropReason } from './scheduler.js';
import { BAD_MESSAGE_REASON, badMessageOf } from './wire-guard.js';

/** What every unary handler of both gRPC services shares. */

/** Details travel in a trailer: kept short, whatever a message echoes. */
export const status = (code: grpc.status, text: string): grpc.ServiceError => {
  const details = text.length > 1024 ? `${text.slice(0, 1024)}...` : text;
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
};

/** A CortexcastError's code as its metric label: CC_ERR_NOT_FINITE -> not_finite. */
export const reasonOf = (e: unknown): string => (e instanceof CortexcastError ? e.code.replace(/^CC_ERR_/, '').toLowerCase() : 'internal');

/** How a unary call whose job did not run is answered. */
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

/** A job that ended without an image, as the unary call's status (counted by model and code). */
export function dropStatus(metrics: ServerMetrics, model: string, o: Extract<DecodeOutcome, { status: 'DROPPED' }>): grpc.ServiceError {
  const code = UNARY_STATUS[o.reason];
  metrics.unaryDecodes.inc({ model, code: grpc.status[code] });
  return status(code, `${o.reason}: ${o.detail}`);
}

/**
 * How long a unary job may wait for a worker (its deadline or limits.maxDecodeWaitMs, whichever is
 * sooner), and whether a cancellation was the deadline passing: grpc-js reports both alike.
 */
export function unaryWait(call: grpc.ServerUnaryCall<unknown, unknown>, maxWaitMs: number): { waitMs: number; cancelReason: () => 'deadline' | 'cancelled' } {
  const deadline = call.getDeadline();
  const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
  const waitMs = Math.min(maxWaitMs, Number.isFinite(deadlineMs) ? deadlineMs - Date.now() : Infinity);
  return { waitMs, cancelReason: () => (Date.now() >= deadlineMs - 2 ? 'deadline' : 'cancelled') };
}

export interface UnaryDeps {
  token: string | undefined;
  metrics: ServerMetrics;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

/**
 * Every unary handler: the token first (failures counted), then the message's own checks (size,
 * protobuf), then the handler. A CortexcastError it throws is the client's error (NOT_FOUND for an
 * unknown model, else INVALID_ARGUMENT, counted by code); anything else is a bug that costs this
 * call, never the process. The handler's callback answers once.
 */
export const guardUnary =
  <Req, Res>(d: UnaryDeps, rpc: string, h: (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>) => void) =>
  (call: grpc.ServerUnaryCall<Req, Res>, cb: grpc.sendUnaryData<Res>): void => {
    let answered = false;
    const once: grpc.sendUnaryData<Res> = (e, v) => {
      if (answered) return;
      answered = true;
      cb(e, v);
    };
    if (!metadataAuthorised(call.metadata, d.token)) {
      d.metrics.framesRejected.inc({ reason: 'unauthenticated' });
      return once(status(grpc.status.UNAUTHENTICATED, UNAUTHENTICATED_DETAILS));
    }
    const bad = badMessageOf(call.request);
    if (bad) {
      d.metrics.framesRejected.inc({ reason: BAD_MESSAGE_REASON[bad.kind] });
      return once(status(bad.kind === 'oversized' ? grpc.status.RESOURCE_EXHAUSTED : grpc.status.INVALID_ARGUMENT, bad.message));
    }
    try {
      h(call, once);
    } catch (e) {
      if (e instanceof CortexcastError) {
        d.metrics.framesRejected.inc({ reason: reasonOf(e) });
        return once(status(e.code === 'CC_ERR_UNKNOWN_MODEL' ? grpc.status.NOT_FOUND : grpc.status.INVALID_ARGUMENT, e.message));
      }
      d.log('error', 'handler failed', { rpc, error: (e as Error).stack ?? String(e) });
      once(status(grpc.status.INTERNAL, `internal error in ${rpc}`));
    }
  };
