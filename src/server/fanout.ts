import { Packr } from 'msgpackr';
import type WebSocket from 'ws';
import type { DecodedFrame } from './frames.js';
import { now } from './frames.js';
import { exactInteger } from '../common/uint64.js';
import type { ServerConfig } from './config.js';
import type { ServerMetrics } from './metrics.js';

/**
 * WebSocket fan-out of decoded frames. Each subscriber chooses a stream (or '*') and a model (or '*')
 * and whether it wants the float32 values too. A frame is encoded once per variant (msgpack) and sent
 * as one binary message. Slow-client policy: a subscriber whose unsent bytes exceed the limit skips
 * frames (counted) until it drains; one that vanishes is removed on close. Others are unaffected.
 *
 * Vanished subscribers: each is pinged every subscriberPingMs and terminated if the previous ping
 * went unanswered.
 *
 * Frame message (msgpack map): { type: 'frame', stream, model, seq (uint64: a msgpack integer, a
 *   BigInt in JavaScript decoders above 2^53), imageId?, stimulus?: {width, height,
 *   pixels: bin}, provider, width, height,
 *   pixels: bin (grey 0..255, row-major), values?: bin (little-endian float32, z-scored model output),
 *   t: { acquired?, ingested, decodeStart, decodeEnd, sent } (epoch ms, fractional) }.
 */
export interface Subscription {
  stream: string;
  model: string;
  float: boolean;
}

interface Subscriber extends Subscription {
  ws: WebSocket;
  sent: number;
  skipped: number;
  alive: boolean;
}


const packr = new Packr({ useRecords: false });

export const encodeMessage = (m: unknown): Buffer => packr.pack(m);

export class Fanout {
  private subs = new Set<Subscriber>();
  private readonly maxSubscribers: number;
  private readonly maxBufferedBytes: number;
  private readonly pinger: NodeJS.Timeout;

  constructor(
    private readonly metrics: ServerMetrics,
    limits: ServerConfig['limits'],
  ) {
    this.maxSubscribers = limits.maxSubscribers;
    this.maxBufferedBytes = limits.maxSubscriberBufferBytes;
    this.pinger = setInterval(() => this.ping(), limits.subscriberPingMs);
    this.pinger.unref();
  }

  private ping(): void {
    for (const s of this.subs) {
      if (!s.alive) {
        s.ws.terminate();
        continue;
      }
      s.alive = false;
      s.ws.ping();
    }
  }

  get size(): number {
    return this.subs.size;
  }

  /** Register a subscriber; false when the limit is reached (the caller closes it with a reason). */
  add(ws: WebSocket, sub: Subscription): boolean {
    if (this.subs.size >= this.maxSubscribers) return false;
    const s: Subscriber = { ...sub, ws, sent: 0, skipped: 0, alive: true };
    this.subs.add(s);
    ws.on('pong', () => (s.alive = true));
    this.metrics.subscribers.set(this.subs.size);
    const remove = (): void => {
      this.subs.delete(s);
      this.metrics.subscribers.set(this.subs.size);
    };
    ws.on('close', remove);
    ws.on('error', remove);
    return true;
  }

  publish(f: DecodedFrame): void {
    const t0 = now();
    let plain: Buffer | undefined;
    let withFloat: Buffer | undefined;
    const encode = (float: boolean): Buffer =>
      encodeMessage({
        type: 'frame',
        stream: f.streamId,
        model: f.model,
        seq: exactInteger(f.sequence),
        imageId: f.imageId,
        stimulus: f.stimulus,
        provider: f.provider,
        width: f.width,
        height: f.height,
        pixels: f.pixels,
        values: float ? f.values : undefined,
        t: { acquired: f.acquiredMs, ingested: f.ingestedMs, decodeStart: f.decodeStartMs, decodeEnd: f.decodeEndMs, sent: now() },
      });
    for (const s of this.subs) {
      if ((s.stream !== '*' && s.stream !== f.streamId) || (s.model !== '*' && s.model !== f.model)) continue;
      if (s.ws.readyState !== 1) continue;
      if (s.ws.bufferedAmount > this.maxBufferedBytes) {
        s.skipped++;
        this.metrics.subscriberSkips.inc({ model: f.model });
        continue;
      }
      const msg = s.float ? (withFloat ??= encode(true)) : (plain ??= encode(false));
      s.ws.send(msg, { binary: true });
      s.sent++;
    }
    const end = now();
    this.metrics.send.observe({ model: f.model }, (end - t0) / 1000);
    this.metrics.endToEnd.observe({ model: f.model, origin: 'ingested' }, (end - f.ingestedMs) / 1000);
    if (f.acquiredMs !== undefined && f.acquiredPlausible) this.metrics.endToEnd.observe({ model: f.model, origin: 'acquired' }, Math.max(0, end - f.acquiredMs) / 1000);
  }

  closeAll(code: number, reason: string): void {
    clearInterval(this.pinger);
    for (const s of this.subs) s.ws.close(code, reason);
  }
}
