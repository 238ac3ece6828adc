import { Packr } from 'msgpackr';
import type WebSocket from 'ws';
import type { DecodedFrame } from './frames.js';
import { now } from './frames.js';
import type { ServerMetrics } from './metrics.js';

/**
 * WebSocket fan-out of decoded frames. Each subscriber chooses a stream (or '*') and a model (or '*')
 * and whether it wants the float32 values too. A frame is encoded once per variant (msgpack) and sent
 * as one binary message. Slow-client policy: a subscriber whose unsent bytes exceed the limit skips
 * frames (counted) until it drains; one that vanishes is removed on close. Others are unaffected.
 *
 * Frame message (msgpack map): { type: 'frame', stream, model, seq, imageId?, stimulus?: {width, height,
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
}

const packr = new Packr({ useRecords: false });

export const encodeMessage = (m: unknown): Buffer => packr.pack(m);

export class Fanout {
  private subs = new Set<Subscriber>();

  constructor(
    private readonly metrics: ServerMetrics,
    private readonly maxSubscribers: number,
    private readonly maxBufferedBytes: number,
  ) {}

  get size(): number {
    return this.subs.size;
  }

  /** Register a subscriber; false when the limit is reached (the caller closes it with a reason). */
  add(ws: WebSocket, sub: Subscription): boolean {
    if (this.subs.size >= this.maxSubscribers) return false;
    const s: Subscriber = { ...sub, ws, sent: 0, skipped: 0 };
    this.subs.add(s);
    this.metrics.subscribers.set(this.subs.size);
    const remove = (): void => {
      this.subs.delete(s);
      this.metrics.subscribers.set(this.subs.size);
    };
    ws.once('close', remove);
    ws.once('error', remove);
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
        seq: f.sequence,
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
    if (f.acquiredMs) this.metrics.endToEnd.observe({ model: f.model, origin: 'acquired' }, Math.max(0, end - f.acquiredMs) / 1000);
  }

  closeAll(code: number, reason: string): void {
    for (const s of this.subs) s.ws.close(code, reason);
  }
}
