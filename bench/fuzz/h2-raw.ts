import fc from 'fast-check';
import { connect, constants, type ClientHttp2Session } from 'node:http2';
import { gzipSync } from 'node:zlib';
import { exchange } from './raw-tcp.js';
import { frameObject } from './grpc-stream.js';
import { encode, pb } from './wire.js';
import { b64, DEADLINE_MS, quiescent, sleep, unb64, until, type FrameCounters, type FuzzTarget, type Outcome, type Surface } from './types.js';

/**
 * HTTP/2 on the gRPC port below grpc-js's client: a node:http2 session sends any pseudo-headers,
 * content types, grpc-timeout / grpc-encoding values and tokens, then length-prefixed messages whose
 * compressed flag and declared length may lie, with or without END_STREAM; or raw bytes on a bare
 * TCP connection, after the HTTP/2 preface or instead of it. Oracle: every stream is answered or
 * reset, and every bare connection closed after the client's half-close, before the deadline; frames
 * the server counted as received are all decoded or dropped.
 */
interface H2Message {
  /** 0: plain; 1: compressed (gzip'd when `gzip`); anything else: an invalid flag. */
  flag: number;
  gzip: boolean;
  /** Declared length minus the real one (0: honest). */
  lengthDelta: number;
  payload: { kind: 'frame' } | { kind: 'bytes'; b64: string };
}

export type H2Input =
  | {
      kind: 'stream';
      method: string;
      path: string;
      contentType: string;
      auth: 'good' | 'none' | 'wrong' | 'twice';
      headers: [string, string][];
      messages: H2Message[];
      endStream: boolean;
      /** Reset the stream (RST_STREAM CANCEL) after the messages instead of waiting for an answer. */
      reset: boolean;
    }
  | { kind: 'tcp'; preface: boolean; b64: string };

const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 30 });
const headerName = fc.stringMatching(/^[a-z0-9-]{1,20}$/);

const messageArb: fc.Arbitrary<H2Message> = fc.record({
  flag: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.nat(255) }),
  gzip: fc.boolean(),
  lengthDelta: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -8, max: 8 }) }, { weight: 1, arbitrary: fc.constantFrom(2 ** 24, 2 ** 31, 2 ** 32 - 100) }),
  payload: fc.oneof({ weight: 3, arbitrary: fc.constant({ kind: 'frame' as const }) }, { weight: 2, arbitrary: fc.record({ kind: fc.constant('bytes' as const), b64: fc.uint8Array({ maxLength: 200 }).map(b64) }) }),
});

export const h2Arb = (): fc.Arbitrary<H2Input> =>
  fc.oneof(
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant('stream' as const),
        method: fc.oneof({ weight: 6, arbitrary: fc.constant('POST') }, { weight: 1, arbitrary: fc.constantFrom('GET', 'PUT', 'HEAD', 'OPTIONS', 'X') }),
        path: fc.oneof(
          { weight: 6, arbitrary: fc.constantFrom('/cortexcast.v1.Decoder/StreamFrames', '/cortexcast.v1.Decoder/Decode', '/cortexcast.v1.Decoder/ListModels', '/inference.GRPCInferenceService/ModelInfer', '/grpc.health.v1.Health/Check', '/grpc.reflection.v1.ServerReflection/ServerReflectionInfo', '/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo', '/grpc.health.v1.Health/Watch') },
          { weight: 1, arbitrary: fc.constantFrom('/', '*', '/x/y', '//', '/cortexcast.v1.Decoder/', '/cortexcast.v1.Decoder/StreamFrames/extra') },
          { weight: 1, arbitrary: printable.map((s) => `/${s}`) },
        ),
        contentType: fc.oneof({ weight: 6, arbitrary: fc.constant('application/grpc') }, { weight: 1, arbitrary: fc.constantFrom('application/grpc+proto', 'application/grpc+json', 'application/json', 'text/plain', '') }),
        auth: fc.oneof({ weight: 4, arbitrary: fc.constant('good' as const) }, { weight: 1, arbitrary: fc.constantFrom('none' as const, 'wrong' as const, 'twice' as const) }),
        headers: fc.array(
          fc.oneof(
            fc.tuple(fc.constantFrom('grpc-timeout', 'grpc-encoding', 'grpc-accept-encoding', 'grpc-message-type', 'user-agent', 'x-cortexcast-call', 'origin', 'grpc-status'), fc.oneof(fc.constantFrom('1n', '0S', '99999999H', '1', 'gzip', 'deflate', 'identity', 'snappy', 'trailers', ''), printable)),
            fc.tuple(headerName, printable),
          ),
          { maxLength: 4 },
        ),
        messages: fc.array(messageArb, { maxLength: 4 }),
        endStream: fc.oneof({ weight: 5, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
        reset: fc.oneof({ weight: 6, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('tcp' as const), preface: fc.boolean(), b64: fc.uint8Array({ maxLength: 512 }).map(b64) }) },
  );

/** Well under the fuzz configuration's streamIdleMs (2 s), which would end the call anyway. */
const RESET_RELEASE_MS = 1300;
const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
// Headers node:http2 refuses to send (connection-specific, or te other than trailers).
const FORBIDDEN = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'host', 'te']);

export function h2Message(m: H2Message, t: FuzzTarget, last: Map<string, bigint>): Buffer {
  let payload =
    m.payload.kind === 'frame'
      ? encode(pb.ResponseFrame, frameObject({ streamId: 'h2-raw', model: 'ok', sequence: 'next', acquiredAtUs: 'now', countDelta: 0, tailBytes: 0, nonFinite: [], unitIds: 'none', imageId: '0', stimulus: null }, t, last))
      : unb64(m.payload.b64);
  if (m.flag === 1 && m.gzip) payload = gzipSync(payload);
  const head = Buffer.alloc(5);
  head[0] = m.flag;
  head.writeUInt32BE(Math.max(0, Math.min(2 ** 32 - 1, payload.length + m.lengthDelta)), 1);
  return Buffer.concat([head, payload]);
}

const unaccountedOnServer = (a: FrameCounters, b: FrameCounters): number => b.received - a.received - (b.decoded - a.decoded) - (b.dropped - a.dropped);

function runStream(i: Extract<H2Input, { kind: 'stream' }>, t: FuzzTarget, ms: number): Promise<string> {
  return new Promise((resolve) => {
    let session: ClientHttp2Session | undefined;
    let done = false;
    let responded = '';
    const finish = (what: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      session?.destroy();
      resolve(what);
    };
    const timer = setTimeout(() => finish(responded ? `hang: response ${responded}, but the stream was not ended within ${ms} ms` : `hang: no response within ${ms} ms`), ms);
    session = connect(`http://127.0.0.1:${t.grpcPort}`);
    session.on('error', (e) => finish(`session error ${(e as NodeJS.ErrnoException).code ?? e.message}`));
    session.on('goaway', () => undefined);
    const headers: Record<string, string | string[]> = { ':method': i.method, ':path': i.path, 'content-type': i.contentType, te: 'trailers' };
    if (i.auth === 'good') headers.authorization = `Bearer ${t.token}`;
    if (i.auth === 'wrong') headers.authorization = 'Bearer not-the-token';
    // Two values: grpc-js's client never sends this, a hand-made one can.
    if (i.auth === 'twice') headers.authorization = ['Bearer not-the-token', `Bearer ${t.token}`];
    for (const [k, v] of i.headers) if (!FORBIDDEN.has(k)) headers[k] = v;
    let req;
    try {
      req = session.request(headers, { endStream: false });
    } catch (e) {
      return finish(`client refused the headers (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    // The server has answered once it ends its half of the stream (trailers, or a trailers-only
    // response), even while ours stays open.
    req.on('response', (h) => (responded = `:status ${h[':status']}${h['grpc-status'] !== undefined ? ` grpc-status ${h['grpc-status']}` : ''}`));
    req.on('trailers', (h) => (responded += ` trailers grpc-status ${h['grpc-status']}`));
    req.on('error', () => undefined);
    req.on('data', () => undefined);
    req.on('end', () => finish(i.reset ? 'reset by the client' : responded || 'ended without headers'));
    req.on('close', () => finish(responded || `reset (${req.rstCode === constants.NGHTTP2_NO_ERROR ? 'no error' : `code ${req.rstCode}`})`));
    const last = new Map<string, bigint>();
    for (const m of i.messages) req.write(h2Message(m, t, last));
    if (i.reset) {
      req.close(constants.NGHTTP2_CANCEL, () => finish('reset by the client'));
      return;
    }
    if (i.endStream) req.end();
  });
}

export async function runH2(i: H2Input, t: FuzzTarget): Promise<Outcome> {
  if (i.kind === 'tcp') {
    const r = await exchange(t.grpcPort, [i.preface ? PREFACE : Buffer.alloc(0), unb64(i.b64)], { ms: DEADLINE_MS, end: true });
    if (r.timedOut) return { hang: `TCP ${i.preface ? 'preface + ' : ''}${unb64(i.b64).length} bytes: connection still open ${DEADLINE_MS} ms after the client's half-close` };
    return { note: `TCP ${i.preface ? 'preface+bytes' : 'bytes'}: closed after ${r.bytes.length} bytes back` };
  }
  const before = await quiescent(t);
  // Reflection is a client-driven stream and Health/Watch streams until the client leaves: no server
  // timer applies to either (connection and watch caps bound them), so they are not judged by a deadline.
  const heldByClient = (!i.endStream && i.path.includes('ServerReflection')) || i.path === '/grpc.health.v1.Health/Watch';
  const r = await runStream(i, t, heldByClient ? 3000 : DEADLINE_MS);
  if (r.startsWith('hang: ') && heldByClient) return { note: `${i.path.split('/').pop()} stream held open by the client` };
  if (r.startsWith('hang: ')) return { hang: `${i.method} ${i.path.slice(0, 60)}: ${r.slice(6)}` };
  if (i.reset) {
    // A reset call must be let go at once: until it is, it keeps its stream ids (a reconnecting rig
    // gets CC_ERR_STREAM_IN_USE) and a stream slot. Give the server a moment to see the call at all.
    await sleep(200);
    if (!(await until(async () => (await t.counters()).streams === 0, RESET_RELEASE_MS, 25)))
      return { hang: `${i.method} ${i.path.slice(0, 60)} reset by the client (RST_STREAM) after ${i.messages.length} messages: the server still held the call ${RESET_RELEASE_MS + 200} ms later (cortexcast_streams > 0)` };
  }
  // Frames of a cancelled or reset call may settle inside the server after the client saw its end.
  let after = await quiescent(t);
  if (unaccountedOnServer(before, after) !== 0) await until(async () => unaccountedOnServer(before, (after = await t.counters())) === 0, 3000, 50);
  const u = unaccountedOnServer(before, after);
  if (u !== 0) return { unaccounted: Math.abs(u), note: `${r}; server counted ${after.received - before.received} received` };
  return { note: r.replace(/grpc-status (\d+).*/, 'grpc-status $1') };
}

export const h2Raw: Surface<H2Input> = {
  name: 'h2-raw',
  what: 'raw HTTP/2 on the gRPC port: any method, path, content type, grpc-* headers and token; length-prefixed messages with lying flags and lengths; bare TCP bytes',
  arbitrary: () => h2Arb(),
  run: runH2,
};
