import type * as grpc from '@grpc/grpc-js';
import client from 'prom-client';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import type WebSocket from 'ws';
import type { WebSocketServer } from 'ws';
import { metadataAuthorised, tokenMatches } from './auth.js';
import type { ServerConfig } from './config.js';
import { encodeMessage } from './fanout.js';
import { decodeStimulus, now } from './frames.js';
import type { ResponseFrameMsg } from './ingest-call.js';
import type { ServerMetrics } from './metrics.js';
import { badMessageOf } from './wire-guard.js';

export const RESPONSE_FEED_PATH = '/ws/responses';

/**
 * The response feed: every well-formed frame the server reads on StreamFrames, as it arrived (raw
 * responses, unit ids, image id and stimulus), whether or not a served model decodes it. It exists
 * for calibration: a new animal's frames are refused (unknown model, other neuron count) until the
 * first decoder for it serves, and `cortexcast calibrate` learns that decoder from this feed meanwhile.
 *
 * Raw recordings are data the frame feed (/ws) never exposes, so this one is refused unless the
 * server runs with a token and the request carries it. Bounded like the frame feed: a subscriber
 * with more than limits.maxSubscriberBufferBytes unsent skips frames (counted, and reported to it
 * as `skippedBefore` on the next frame it gets); at most limits.maxSubscribers of them; pinged every
 * limits.subscriberPingMs and dropped when a ping goes unanswered.
 *
 * Message (msgpack map): { type: 'responses', stream, model, seq (decimal string), imageId?,
 *   unitIds? (decimal strings), responses: bin (little-endian float32, raw), stimulus?: {width,
 *   height, pixels: bin}, skippedBefore, t: { acquired?, ingested } }.
 * Query: ?stream=<id|*>&model=<name|*>&stimulus=0 (leave the stimulus out: the subscriber has the
 * stimulus set and needs the image id only).
 */
export interface ResponseSubscription {
  stream: string;
  model: string;
  stimulus: boolean;
}

interface Subscriber extends ResponseSubscription {
  ws: WebSocket;
  skipped: number;
  alive: boolean;
}

const STREAM_ID = /^[\x21-\x7e]{1,128}$/;

export class ResponseFeed {
  private readonly subs = new Set<Subscriber>();
  private readonly pinger: NodeJS.Timeout;
  private readonly skips: client.Counter;
  private readonly sent: client.Counter;
  private readonly gauge: client.Gauge;

  constructor(
    metrics: ServerMetrics,
    private readonly limits: ServerConfig['limits'],
  ) {
    const registers = [metrics.registry];
    this.skips = new client.Counter({ name: 'cortexcast_response_feed_skipped_total', help: 'Frames not sent to a slow response-feed subscriber (/ws/responses)', registers });
    this.sent = new client.Counter({ name: 'cortexcast_response_feed_sent_total', help: 'Frames sent to response-feed subscribers (/ws/responses)', registers });
    this.gauge = new client.Gauge({ name: 'cortexcast_response_feed_subscribers', help: 'Connected response-feed subscribers (/ws/responses)', registers });
    this.pinger = setInterval(() => {
      for (const s of this.subs) {
        if (!s.alive) s.ws.terminate();
        else {
          s.alive = false;
          s.ws.ping();
        }
      }
    }, limits.subscriberPingMs);
    this.pinger.unref();
  }

  get size(): number {
    return this.subs.size;
  }

  add(ws: WebSocket, sub: ResponseSubscription): boolean {
    if (this.subs.size >= this.limits.maxSubscribers) return false;
    const s: Subscriber = { ...sub, ws, skipped: 0, alive: true };
    this.subs.add(s);
    this.gauge.set(this.subs.size);
    ws.on('pong', () => (s.alive = true));
    const remove = (): void => {
      this.subs.delete(s);
      this.gauge.set(this.subs.size);
    };
    ws.on('close', remove);
    ws.on('error', remove);
    return true;
  }

  /** A frame as read from the wire. Ill-formed ones are left out here; the ingest path rejects them with their reason. */
  offer(m: ResponseFrameMsg): void {
    if (!this.subs.size || badMessageOf(m) || !STREAM_ID.test(m.streamId)) return;
    const bytes = m.responses;
    if (!bytes?.byteLength || bytes.byteLength % 4 !== 0) return;
    const n = bytes.byteLength / 4;
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < n; i++) if (!Number.isFinite(view.getFloat32(i * 4, true))) return;
    if (m.unitIds.length && m.unitIds.length !== n) return;
    let stimulus;
    try {
      stimulus = decodeStimulus(m.stimulus, m.stimulusWidth, m.stimulusHeight);
    } catch {
      return;
    }
    const acquiredUs = Number(m.acquiredAtUs);
    const base = {
      type: 'responses',
      stream: m.streamId,
      model: m.model,
      seq: String(m.sequence),
      imageId: Number(m.imageId) || undefined,
      unitIds: m.unitIds.length ? m.unitIds : undefined,
      responses: Buffer.from(bytes),
      t: { acquired: acquiredUs ? acquiredUs / 1000 : undefined, ingested: now() },
    };
    for (const s of this.subs) {
      if ((s.stream !== '*' && s.stream !== m.streamId) || (s.model !== '*' && s.model !== m.model) || s.ws.readyState !== 1) continue;
      if (s.ws.bufferedAmount > this.limits.maxSubscriberBufferBytes) {
        s.skipped++;
        this.skips.inc();
        continue;
      }
      s.ws.send(encodeMessage({ ...base, stimulus: s.stimulus ? stimulus : undefined, skippedBefore: s.skipped }), { binary: true });
      this.sent.inc();
    }
  }

  closeAll(code: number, reason: string): void {
    clearInterval(this.pinger);
    for (const s of this.subs) s.ws.close(code, reason);
  }
}

/** StreamFrames with every authorised call's frames also offered to the feed (before the ingest path reads them). */
export function tapStreamFrames(impl: grpc.UntypedServiceImplementation, feed: ResponseFeed, token: string | undefined): grpc.UntypedServiceImplementation {
  const ingest = impl.StreamFrames as (call: grpc.ServerDuplexStream<ResponseFrameMsg, unknown>) => void;
  return {
    ...impl,
    StreamFrames: (call: grpc.ServerDuplexStream<ResponseFrameMsg, unknown>) => {
      if (metadataAuthorised(call.metadata, token))
        call.on('data', (m: ResponseFrameMsg) => {
          try {
            feed.offer(m);
          } catch {
            // The feed is a copy for calibration: a frame it cannot pass on is left out, and the ingest path goes on.
          }
        });
      ingest(call);
    },
  };
}

const refuse = (socket: Duplex, code: number, text: string, body: string): void => {
  if (socket.writable) socket.end(`HTTP/1.1 ${code} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  else socket.destroy();
};

/** The upgrade of /ws/responses: the server's token required (a server without one has no response feed). */
export function upgradeResponseFeed(
  feed: ResponseFeed,
  wss: WebSocketServer,
  req: IncomingMessage,
  socket: Duplex,
  head: Buffer,
  o: { url: URL; token: string; serverToken: string | undefined; accepting: boolean; onUnauthorised: () => void },
): void {
  if (!o.serverToken) return refuse(socket, 403, 'Forbidden', 'the response feed is off: it carries raw recordings, so it needs a server token (--token or CORTEXCAST_TOKEN)\n');
  if (!tokenMatches(o.token, o.serverToken)) {
    o.onUnauthorised();
    return refuse(socket, 401, 'Unauthorized', 'missing or wrong token (Authorization: Bearer <token> or ?token=)\n');
  }
  if (!o.accepting) return refuse(socket, 503, 'Service Unavailable', 'server is not running\n');
  const q = o.url.searchParams;
  for (const key of ['stream', 'model', 'stimulus']) {
    const values = q.getAll(key);
    if (values.length > 1) return refuse(socket, 400, 'Bad Request', `${key} is given ${values.length} times: give it once\n`);
    if (values.length && !values[0]) return refuse(socket, 400, 'Bad Request', `${key}= is empty\n`);
  }
  const stimulus = q.get('stimulus') ?? '1';
  if (stimulus !== '0' && stimulus !== '1') return refuse(socket, 400, 'Bad Request', 'stimulus= is 0 or 1\n');
  const sub: ResponseSubscription = { stream: q.get('stream') ?? '*', model: q.get('model') ?? '*', stimulus: stimulus === '1' };
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('error', () => ws.terminate());
    if (!feed.add(ws, sub)) return ws.close(1013, 'subscriber limit reached');
    ws.send(encodeMessage({ type: 'hello', feed: 'responses', subscription: sub }), { binary: true });
  });
}
