import * as grpc from '@grpc/grpc-js';
import { ccError, CortexcastError, quoted } from '../common/errors.js';
import type { ServerConfig } from './config.js';
import { decodeResponses, decodeStimulus, now, toGrey, type DecodedFrame, type Stimulus } from './frames.js';
import type { ServerMetrics } from './metrics.js';
import type { ModelRegistry, ServedModel } from './model-registry.js';
import { StreamWindow } from './response-window.js';
import type { DecodeOutcome, DecodeScheduler } from './scheduler.js';
import { reasonOf, status } from './unary.js';
import { BAD_MESSAGE_REASON, badMessageOf, type RateLimitedLog } from './wire-guard.js';

export interface ResponseFrameMsg {
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

export interface AckMsg {
  sequence: string;
  status: 'ACCEPTED' | 'DECODED' | 'DROPPED' | 'REJECTED';
  reason: string;
  decodeUs: number;
  provider: string;
}

/** Stream id -> the call that owns it and the last sequence accepted on it (shared by all calls). */
export type StreamOwners = Map<string, { owner: IngestCall; lastSequence: bigint }>;

export interface IngestDeps {
  cfg: ServerConfig;
  registry: ModelRegistry;
  scheduler: DecodeScheduler;
  metrics: ServerMetrics;
  publish: (f: DecodedFrame) => void;
  owners: StreamOwners;
  warnings: RateLimitedLog;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
  /** Called once when the call ends, however it ends. */
  onFinish: () => void;
}

/** A frame that passed every check, ready for the scheduler. */
interface Accepted {
  m: ResponseFrameMsg;
  served: ServedModel;
  raw: Float32Array;
  stimulus?: Stimulus;
  sequence: bigint;
  ingestedMs: number;
}

const STREAM_ID = /^[\x21-\x7e]{1,128}$/;
/** acquired_at_us further than this from the server's clock is a clock problem, not latency. */
const CLOCK_PAST_MS = 60_000;
const CLOCK_FUTURE_MS = 1_000;

/**
 * One StreamFrames call, from its first frame to its status. The contract it keeps: exactly one final
 * ack per frame (DECODED / DROPPED / REJECTED); acks are flow-controlled (when the client reads them
 * slower than they come, this stops reading its frames, so nothing is skipped or buffered without
 * bound); a stream id belongs to one call at a time; the call ends OK after a half-close once every
 * frame has its ack, UNAVAILABLE when idle or when its acks go unread for streamIdleMs, and
 * RESOURCE_EXHAUSTED (held until the acks of the frames read are written) when the transport refuses
 * a message it cannot read past.
 */
export class IngestCall {
  private readonly owned = new Set<string>();
  /** Each owned stream's response window (frames averaged per decode, and what was on screen). */
  private readonly windows = new Map<string, StreamWindow>();
  private readonly peer: string;
  private readonly idleMs: number;
  private open = true;
  private unsettled = 0;
  /** Accepted frames without their final ack yet (unsettled counts them). */
  private readonly pending = new Set<{ sequence: string; model: string; answered: boolean }>();
  /** The drop reason of frames that meet the call ending: stream_ending, or shutdown. */
  private endingReason = 'stream_ending';
  private halfClosed = false;
  /** The server is ending the call: later messages are ignored. */
  private ending = false;
  private paused = false;
  /** The transport refused an oversized message: no idle timer, and that status ends the call. */
  private oversized = false;
  private idle?: NodeJS.Timeout;
  /** Runs on every settle (and after every frame) while the call waits to end. */
  private settledHook?: () => void;
  private afterData?: () => void;

  constructor(
    private readonly call: grpc.ServerDuplexStream<ResponseFrameMsg, AckMsg>,
    private readonly d: IngestDeps,
  ) {
    this.peer = call.getPeer();
    this.idleMs = d.cfg.limits.streamIdleMs;
    this.touch();
    call.on('data', (m: ResponseFrameMsg) => this.onData(m));
    call.on('end', () => {
      this.halfClosed = true;
      this.endIfDone();
    });
    for (const ev of ['cancelled', 'error', 'close']) call.on(ev, () => this.finish());
  }

  /**
   * The transport refused a message: frames read before it may still be on their way here. Take
   * those, let every accepted frame settle (or 2 s pass), then let the held status go out.
   */
  transportFailed(send: () => void): void {
    clearTimeout(this.idle);
    this.oversized = true;
    let quiet: NodeJS.Timeout | undefined;
    const go = (): void => {
      clearTimeout(force);
      clearTimeout(quiet);
      this.settledHook = undefined;
      send();
      this.finish();
    };
    const force = setTimeout(go, 2000);
    force.unref();
    const check = (): void => {
      clearTimeout(quiet);
      quiet = setTimeout(() => this.unsettled === 0 && go(), 25);
    };
    this.afterData = check;
    this.settledHook = () => this.unsettled === 0 && check();
    check();
  }

  private onData(m: ResponseFrameMsg): void {
    try {
      this.onFrame(m);
      this.afterData?.();
    } catch (e) {
      this.d.log('error', 'frame handler failed', { peer: this.peer, error: (e as Error).stack ?? String(e) });
      this.d.metrics.framesRejected.inc({ reason: 'internal' });
      this.ack({ sequence: String(m.sequence ?? '0'), status: 'REJECTED', reason: 'internal error while validating the frame', decodeUs: 0, provider: '' });
    }
  }

  get isOpen(): boolean {
    return this.open;
  }

  /**
   * The server is stopping: frames still being decoded get up to settleMs to settle, the rest are
   * acked DROPPED shutdown, frames arriving meanwhile too; then the call ends UNAVAILABLE (after
   * those acks, which go out first). Resolves once the status has gone out, or flushMs() later (a
   * client that does not read its acks cannot hold the shutdown).
   */
  shutdown(settleMs: number, flushMs: () => number): Promise<void> {
    if (!this.open) return Promise.resolve();
    this.endingReason = 'shutdown';
    return new Promise((resolve) =>
      this.endWith(status(grpc.status.UNAVAILABLE, 'server is shutting down'), settleMs, () => {
        // grpc-js destroys the call once its trailers went out after the last ack: 'close'.
        if (this.call.destroyed) return resolve();
        const timer = setTimeout(resolve, flushMs());
        timer.unref();
        this.call.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
      }),
    );
  }

  private onFrame(m: ResponseFrameMsg): void {
    if (!this.open) return;
    // A call past its deadline has been ended by grpc-js (DEADLINE_EXCEEDED) or is about to be: no ack
    // could reach the rig, so its frames are not accepted (nor counted, decoded or shown).
    if (this.pastDeadline()) return this.finish();
    if (this.ending) return this.dropWhileEnding(m);
    if (!this.oversized) this.touch();
    const bad = badMessageOf(m);
    if (bad) {
      this.d.metrics.framesRejected.inc({ reason: BAD_MESSAGE_REASON[bad.kind] });
      this.d.warnings.warn(bad.kind, bad.kind === 'oversized' ? 'oversized frame rejected' : 'malformed frame rejected', { peer: this.peer, error: bad.message });
      return this.ack({ sequence: bad.sequence, status: 'REJECTED', reason: bad.message, decodeUs: 0, provider: '' });
    }
    let accepted: Accepted;
    try {
      accepted = this.validate(m);
    } catch (e) {
      if (!(e instanceof CortexcastError)) throw e;
      this.d.metrics.framesRejected.inc({ reason: reasonOf(e) });
      return this.ack({ sequence: m.sequence, status: 'REJECTED', reason: e.message, decodeUs: 0, provider: '' });
    }
    this.submit(accepted);
  }

  /** Every check of a frame, in order; a failure throws the CortexcastError its ack carries. */
  private validate(m: ResponseFrameMsg): Accepted {
    const ingestedMs = now();
    if (!STREAM_ID.test(m.streamId)) throw ccError('CC_ERR_STREAM_ID', quoted(m.streamId, 40), 'must be 1-128 printable ASCII characters without spaces');
    const owner = this.d.owners.get(m.streamId);
    if (owner && owner.owner !== this) throw ccError('CC_ERR_STREAM_IN_USE', m.streamId);
    const sequence = BigInt(m.sequence);
    if (sequence === 0n) throw ccError('CC_ERR_SEQUENCE', '0', 'sequence numbers start at 1');
    if (owner && sequence <= owner.lastSequence)
      throw ccError('CC_ERR_SEQUENCE', m.sequence, `not after ${owner.lastSequence}, the last accepted frame of stream ${m.streamId} (sequences increase strictly)`);
    const served = this.d.registry.get(m.model);
    const raw = decodeResponses(m.responses, served.name, served.neurons);
    const stimulus = decodeStimulus(m.stimulus, m.stimulusWidth, m.stimulusHeight);
    if (m.unitIds.length) {
      const ids = served.bundle.unitIds;
      if (m.unitIds.length !== served.neurons) throw ccError('CC_ERR_UNIT_IDS', served.name, served.neurons, `the frame lists ${m.unitIds.length}`);
      const at = m.unitIds.findIndex((u, i) => u !== String(ids[i]));
      if (at >= 0) throw ccError('CC_ERR_UNIT_IDS', served.name, served.neurons, `first difference at position ${at} (${m.unitIds[at]} vs ${ids[at]})`);
    }
    if (!owner && this.owned.size >= this.d.cfg.limits.maxStreamIdsPerCall)
      throw ccError('CC_ERR_STREAM_ID', quoted(m.streamId, 40), `this call already owns ${this.owned.size} stream ids (limits.maxStreamIdsPerCall)`);
    return { m, served, raw, stimulus, sequence, ingestedMs };
  }

  private submit({ m, served, raw, stimulus, sequence, ingestedMs }: Accepted): void {
    const owner = this.d.owners.get(m.streamId);
    if (owner) owner.lastSequence = sequence;
    else {
      this.d.owners.set(m.streamId, { owner: this, lastSequence: sequence });
      this.owned.add(m.streamId);
    }
    const model = served.name;
    const acquiredUs = Number(m.acquiredAtUs);
    const acquiredMs = acquiredUs ? acquiredUs / 1000 : undefined;
    let clockOk = acquiredMs !== undefined;
    if (acquiredMs !== undefined && (acquiredMs < ingestedMs - CLOCK_PAST_MS || acquiredMs > ingestedMs + CLOCK_FUTURE_MS)) {
      clockOk = false;
      this.d.metrics.clockProblems.inc({ model, kind: acquiredMs > ingestedMs ? 'future' : 'past' });
    }
    this.d.metrics.framesReceived.inc({ model });
    // Every frame enters its stream's window, also those that latest-wins will supersede.
    const step = this.windowOf(m.streamId, served).push(raw, Number(m.imageId) || undefined, stimulus);
    if (step.kind === 'filling') {
      this.d.metrics.framesDropped.inc({ model, reason: 'window_filling' });
      return this.ack({ sequence: m.sequence, status: 'DROPPED', reason: `window_filling: ${step.have} of the ${step.need} frames of the response window`, decodeUs: 0, provider: '' });
    }
    // The decoded window answers the stimulus on screen lagFrames + lengthFrames - 1 frames ago.
    const { imageId, stimulus: shown } = step.screen ?? {};
    const pending = { sequence: m.sequence, model, answered: false };
    this.pending.add(pending);
    this.unsettled++;
    this.d.scheduler.submitFrame(m.streamId, {
      model,
      raw: step.responses,
      ingestedMs,
      label: `frame ${m.sequence}`,
      settle: (o: DecodeOutcome) => {
        // Answered already: the call ended before this frame settled, and acked it then.
        if (pending.answered) return;
        pending.answered = true;
        this.pending.delete(pending);
        this.unsettled--;
        if (o.status === 'DECODED') {
          const s = o.served;
          const published = this.publish(m.sequence, model, {
            streamId: m.streamId,
            model,
            sequence: m.sequence,
            imageId,
            stimulus: shown,
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
          if (published) {
            this.d.metrics.framesDecoded.inc({ model });
            this.ack({ sequence: m.sequence, status: 'DECODED', reason: '', decodeUs: Math.round((o.endMs - o.startMs) * 1000), provider: s.provider });
          }
        } else {
          this.d.metrics.framesDropped.inc({ model, reason: o.reason });
          this.ack({ sequence: m.sequence, status: 'DROPPED', reason: `${o.reason}: ${o.detail}`, decodeUs: 0, provider: '' });
        }
        this.endIfDone();
      },
    });
  }

  /** Fan a decoded frame out; when that throws, the frame is acked DROPPED publish_failed instead of DECODED. */
  private publish(sequence: string, model: string, f: DecodedFrame): boolean {
    try {
      this.d.publish(f);
      return true;
    } catch (e) {
      this.d.warnings.warn('publish_failed', 'decoded frame could not be sent to subscribers', { peer: this.peer, error: (e as Error).stack ?? String(e) });
      this.d.metrics.framesDropped.inc({ model, reason: 'publish_failed' });
      this.ack({ sequence, status: 'DROPPED', reason: `publish_failed: decoded, but sending it to subscribers failed (${(e as Error).message})`, decodeUs: 0, provider: '' });
      return false;
    }
  }

  /** A frame read while the call ends (idle, shutdown): not decoded, but answered and counted like any other. */
  private dropWhileEnding(m: ResponseFrameMsg): void {
    const sequence = badMessageOf(m)?.sequence ?? String(m.sequence ?? '0');
    // Labels are configured model names only, never a client's string.
    const model = typeof m.model === 'string' && this.d.registry.has(m.model) ? m.model : 'unknown';
    this.d.metrics.framesReceived.inc({ model });
    this.d.metrics.framesDropped.inc({ model, reason: this.endingReason });
    this.ack({ sequence, status: 'DROPPED', reason: `${this.endingReason}: the call is ending; frames are no longer decoded`, decodeUs: 0, provider: '' });
  }

  /** Ack every frame still being decoded DROPPED (the call ends before they settle). */
  private dropPending(reason: string): void {
    for (const p of this.pending) {
      p.answered = true;
      this.d.metrics.framesDropped.inc({ model: p.model, reason });
      this.ack({ sequence: p.sequence, status: 'DROPPED', reason: `${reason}: the call ended before the frame was decoded`, decodeUs: 0, provider: '' });
    }
    this.pending.clear();
    this.unsettled = 0;
  }

  /** The stream's window, new when the stream starts or its model, size or window changed (reload). */
  private windowOf(streamId: string, s: ServedModel): StreamWindow {
    let w = this.windows.get(streamId);
    if (!w || !w.fits(s.name, s.neurons, s.responseWindow)) this.windows.set(streamId, (w = new StreamWindow(s.name, s.neurons, s.responseWindow)));
    return w;
  }

  /** Acks are the contract: when the client cannot take more, stop reading its frames until it can. */
  private ack(a: AckMsg): void {
    if (!this.open) return;
    this.d.metrics.acks.inc({ status: a.status });
    if (this.call.write(a) || this.paused) return;
    this.paused = true;
    // The rig is not idle while we hold its frames back; but one that never reads its acks would
    // hold a stream slot forever: it gets streamIdleMs to start reading again.
    clearTimeout(this.idle);
    const idleMs = this.idleMs;
    const stalled = idleMs
      ? setTimeout(() => {
          this.d.log('info', 'stream closed: acks unread', { peer: this.peer, streams: [...this.owned], idleMs });
          this.ending = true;
          this.call.emit('error', status(grpc.status.UNAVAILABLE, `acks not read for ${idleMs} ms (limits.streamIdleMs): stream closed`));
        }, idleMs)
      : undefined;
    stalled?.unref();
    this.call.pause();
    this.call.once('drain', () => {
      clearTimeout(stalled);
      this.paused = false;
      if (!this.open) return;
      this.call.resume();
      if (!this.ending) this.touch();
    });
  }

  private touch(): void {
    if (!this.idleMs) return;
    clearTimeout(this.idle);
    this.idle = setTimeout(() => {
      this.d.log('info', 'idle stream closed', { peer: this.peer, streams: [...this.owned], idleMs: this.idleMs });
      this.endWith(status(grpc.status.UNAVAILABLE, `no frame for ${this.idleMs} ms (limits.streamIdleMs): stream closed`), 1000);
    }, this.idleMs);
    this.idle.unref();
  }

  private endIfDone(): void {
    this.settledHook?.();
    // After an oversized message the held RESOURCE_EXHAUSTED ends the call, never an OK.
    if (this.halfClosed && this.unsettled === 0 && this.open && !this.ending && !this.oversized) this.endWith(undefined, 0);
  }

  /**
   * End the call with a status (OK when none) once every accepted frame has its ack, or after waitMs
   * (frames still being decoded then are acked DROPPED first: every accepted frame gets its ack).
   */
  private endWith(err: grpc.ServiceError | undefined, waitMs: number, ended: () => void = () => undefined): void {
    this.ending = true;
    clearTimeout(this.idle);
    const go = (): void => {
      if (this.open) {
        if (this.pending.size) this.dropPending(this.endingReason);
        if (err) this.call.emit('error', err);
        else this.call.end();
        this.finish();
      }
      ended();
    };
    if (this.unsettled === 0) return go();
    const timer = setTimeout(go, waitMs);
    timer.unref();
    this.settledHook = () => {
      if (this.unsettled === 0) {
        clearTimeout(timer);
        go();
      }
    };
  }

  private pastDeadline(): boolean {
    const d = this.call.getDeadline();
    const ms = d instanceof Date ? d.getTime() : d;
    return Number.isFinite(ms) && Date.now() >= ms;
  }

  private finish(): void {
    if (!this.open) return;
    this.open = false;
    clearTimeout(this.idle);
    this.windows.clear();
    for (const s of this.owned) {
      if (this.d.owners.get(s)?.owner === this) this.d.owners.delete(s);
      this.d.scheduler.dropStream(s);
    }
    this.d.onFinish();
  }
}
