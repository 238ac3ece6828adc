import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { Unpackr } from 'msgpackr';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { ccError } from '../../common/errors.js';

/**
 * Calibration's two public protocols with a running server: the response feed (WebSocket
 * /ws/responses, msgpack; the server's token) and ReloadModels (gRPC, cortexcast.v1.Decoder).
 * Training never imports the server; this is the wire contract documented in the calibration guide.
 */
const PROTO_PATH = fileURLToPath(new URL('../../../proto/cortexcast/v1/decoder.proto', import.meta.url));

/** A frame as the feed sends it. */
export interface FeedFrame {
  stream: string;
  model: string;
  seq: string;
  imageId?: number;
  unitIds?: number[];
  responses: Float32Array;
  stimulus?: { width: number; height: number; pixels: Uint8Array };
  /** Frames the server skipped for this subscriber before this one (it read too slowly). */
  skippedBefore: number;
  /** Epoch ms: acquisition (when the rig stamps it) and ingest. */
  acquired?: number;
  ingested: number;
}

const unpackr = new Unpackr({ useRecords: false });

export interface FeedSubscription {
  close(): void;
  /** Stop reading: frames wait in the socket, and the server skips (and counts) what does not fit its buffer. */
  pause(): void;
  resume(): void;
}

/**
 * Subscribe to /ws/responses. Frames go to `onFrame` as they arrive; the promise resolves once the
 * server said hello and rejects when it refused the subscription.
 */
export function subscribeResponses(
  httpUrl: string,
  o: { token: string; stream?: string; model?: string; stimulus?: boolean; onFrame: (f: FeedFrame) => void; onClose?: (why: string) => void },
): Promise<FeedSubscription> {
  const u = new URL('/ws/responses', httpUrl.replace(/^http/, 'ws'));
  if (o.stream) u.searchParams.set('stream', o.stream);
  if (o.model) u.searchParams.set('model', o.model);
  if (o.stimulus === false) u.searchParams.set('stimulus', '0');
  const ws = new WebSocket(u, { headers: { authorization: `Bearer ${o.token}` }, maxPayload: 16 * 2 ** 20 });
  return new Promise((resolve, reject) => {
    let hello = false;
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => reject(ccError('CC_ERR_CALIBRATION', `the server refused the response feed: ${res.statusCode} ${body.trim()}`)));
    });
    ws.on('message', (data: Buffer) => {
      const m = unpackr.unpack(data) as Record<string, unknown>;
      if (m.type === 'hello') {
        hello = true;
        return resolve({ close: () => ws.close(), pause: () => ws.pause(), resume: () => ws.resume() });
      }
      if (m.type !== 'responses') return;
      const bytes = new Uint8Array(m.responses as Uint8Array);
      const t = (m.t ?? {}) as { acquired?: number; ingested: number };
      const st = m.stimulus as { width: number; height: number; pixels: Uint8Array } | undefined;
      o.onFrame({
        stream: String(m.stream),
        model: String(m.model),
        seq: String(m.seq),
        imageId: typeof m.imageId === 'number' ? m.imageId : undefined,
        unitIds: Array.isArray(m.unitIds) ? (m.unitIds as string[]).map(Number) : undefined,
        responses: new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4),
        stimulus: st ? { width: st.width, height: st.height, pixels: new Uint8Array(st.pixels) } : undefined,
        skippedBefore: Number(m.skippedBefore ?? 0),
        acquired: t.acquired,
        ingested: t.ingested,
      });
    });
    // 'error' is followed by 'close': the subscriber hears of the end once.
    let ended = false;
    const end = (why: string): void => {
      if (ended) return;
      ended = true;
      o.onClose?.(why);
    };
    ws.on('error', (e) => (hello ? end(e.message) : reject(ccError('CC_ERR_CALIBRATION', `response feed at ${u.origin}: ${e.message}`))));
    ws.on('close', (code, reason) => (hello ? end(`${code} ${reason.toString()}`) : reject(ccError('CC_ERR_CALIBRATION', `response feed closed before it started (${code} ${reason.toString()})`))));
  });
}

/** The server's ReloadModels: its models folder is read again and the new set swapped in. */
export class ReloadClient {
  private readonly client: grpc.Client & Record<string, unknown>;
  private readonly md = new grpc.Metadata();

  constructor(address: string, token?: string) {
    const pkg = protoLoader.loadSync(PROTO_PATH, { keepCase: false, longs: String, enums: String, defaults: true, oneofs: true });
    const Decoder = (grpc.loadPackageDefinition(pkg) as unknown as { cortexcast: { v1: { Decoder: grpc.ServiceClientConstructor } } }).cortexcast.v1.Decoder;
    this.client = new Decoder(address, grpc.credentials.createInsecure()) as unknown as grpc.Client & Record<string, unknown>;
    if (token) this.md.set('authorization', `Bearer ${token}`);
  }

  /** Reload; resolves with the served models' names and neuron counts. */
  reload(timeoutMs = 60_000): Promise<{ name: string; neurons: number }[]> {
    return new Promise((resolve, reject) => {
      (this.client.reloadModels as (r: unknown, md: grpc.Metadata, o: grpc.CallOptions, cb: (e: grpc.ServiceError | null, v: { models: { name: string; neurons: number }[] }) => void) => void)({}, this.md, { deadline: Date.now() + timeoutMs }, (e, v) =>
        e ? reject(ccError('CC_ERR_CALIBRATION', `ReloadModels failed: ${e.details || e.message}`)) : resolve(v.models.map((m) => ({ name: m.name, neurons: Number(m.neurons) }))),
      );
    });
  }

  close(): void {
    this.client.close();
  }
}
