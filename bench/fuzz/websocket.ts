import fc from 'fast-check';
import { exchange } from './raw-tcp.js';
import { b64, DEADLINE_MS, unb64, type FuzzTarget, type Outcome, type Surface } from './types.js';

/**
 * WebSocket subscriptions on the HTTP port, written as raw bytes: the upgrade request (query, token,
 * Origin, Host, subprotocols, version, key, Upgrade/Connection spellings) and, when the server
 * switches protocols, WebSocket frames of any opcode, mask, RSV bits and declared length (viewers
 * only listen; the server must cope with whatever they send). Oracle: the upgrade is answered, and
 * after the client's last frame and half-close the server closes the connection, before the deadline.
 */
interface WsFrame {
  fin: boolean;
  rsv: number;
  opcode: number;
  masked: boolean;
  payload: string;
  /** exact, or a 7-bit / 16-bit / 64-bit length that does not match the payload. */
  length: 'exact' | number;
}

export interface WsInput {
  /** /ws (decoded frames) or /ws/responses (the raw response feed). */
  path: '/ws' | '/ws/responses' | string;
  query: [string, string][];
  auth: 'header' | 'query' | 'none' | 'wrong';
  host: 'ok' | 'missing' | string;
  origin: string | null;
  protocol: string | null;
  version: string;
  key: 'valid' | 'missing' | string;
  upgrade: string;
  connection: string;
  frames: WsFrame[];
  finish: 'end' | 'close-then-end' | 'reset';
}

const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 40 });

const frameArb: fc.Arbitrary<WsFrame> = fc.record({
  fin: fc.oneof({ weight: 5, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  rsv: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat(7) }),
  opcode: fc.oneof({ weight: 5, arbitrary: fc.constantFrom(1, 2, 9, 10, 8) }, { weight: 2, arbitrary: fc.nat(15) }),
  masked: fc.oneof({ weight: 6, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  payload: fc.oneof({ weight: 5, arbitrary: fc.uint8Array({ maxLength: 200 }).map(b64) }, { weight: 1, arbitrary: fc.integer({ min: 126, max: 70_000 }).map((n) => b64(new Uint8Array(n).fill(0x61))) }),
  length: fc.oneof({ weight: 8, arbitrary: fc.constant('exact' as const) }, { weight: 1, arbitrary: fc.constantFrom(0, 125, 126, 65535, 65536, 2 ** 31, Number.MAX_SAFE_INTEGER) }),
});

export const wsArb = (): fc.Arbitrary<WsInput> =>
  fc.record({
    path: fc.oneof({ weight: 6, arbitrary: fc.constant('/ws') }, { weight: 2, arbitrary: fc.constant('/ws/responses') }, { weight: 1, arbitrary: fc.constantFrom('/ws/', '/WS', '/ws/x', '/', '/metrics') }),
    query: fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom<[string, string][]>([], [['stream', '*']], [['model', 'ridge']], [['stream', 'rig-a'], ['float', '1']]) },
      { weight: 2, arbitrary: fc.array(fc.tuple(fc.constantFrom('stream', 'model', 'float', 'token', 'x'), printable), { maxLength: 4 }) },
    ),
    auth: fc.oneof({ weight: 3, arbitrary: fc.constant('header' as const) }, { weight: 2, arbitrary: fc.constant('query' as const) }, { weight: 1, arbitrary: fc.constantFrom('none' as const, 'wrong' as const) }),
    host: fc.oneof({ weight: 12, arbitrary: fc.constant('ok') }, { weight: 2, arbitrary: fc.constantFrom('missing', 'evil.example', 'localhost', '') }, { weight: 1, arbitrary: printable }),
    origin: fc.oneof({ weight: 6, arbitrary: fc.constant(null) }, { weight: 2, arbitrary: fc.constant('same') }, { weight: 2, arbitrary: fc.constantFrom('http://127.0.0.1', 'http://evil.example', 'null', 'file://', '') }, { weight: 1, arbitrary: printable }),
    protocol: fc.oneof({ weight: 4, arbitrary: fc.constant(null) }, { weight: 1, arbitrary: fc.constantFrom('msgpack', 'a, b', ',', '') }, { weight: 1, arbitrary: printable }),
    version: fc.oneof({ weight: 8, arbitrary: fc.constant('13') }, { weight: 1, arbitrary: fc.constantFrom('8', '', '13, 8', 'x') }),
    key: fc.oneof({ weight: 8, arbitrary: fc.constant('valid') }, { weight: 1, arbitrary: fc.constantFrom('missing', '', 'short', '!!!!!!!!!!!!!!!!!!!!!!==') }),
    upgrade: fc.oneof({ weight: 8, arbitrary: fc.constant('websocket') }, { weight: 1, arbitrary: fc.constantFrom('WebSocket', 'h2c', '', 'websocket, h2c') }),
    connection: fc.oneof({ weight: 8, arbitrary: fc.constant('Upgrade') }, { weight: 1, arbitrary: fc.constantFrom('keep-alive, Upgrade', 'close', '', 'upgrade') }),
    frames: fc.array(frameArb, { maxLength: 4 }),
    finish: fc.oneof({ weight: 4, arbitrary: fc.constantFrom('end' as const, 'close-then-end' as const) }, { weight: 1, arbitrary: fc.constant('reset' as const) }),
  });

export function wsFrameBytes(f: WsFrame): Buffer {
  const payload = unb64(f.payload);
  const len = f.length === 'exact' ? payload.length : f.length;
  const head: number[] = [(f.fin ? 0x80 : 0) | ((f.rsv & 7) << 4) | (f.opcode & 15)];
  const m = f.masked ? 0x80 : 0;
  let ext = Buffer.alloc(0);
  if (len < 126) head.push(m | len);
  else if (len < 65536) {
    head.push(m | 126);
    ext = Buffer.alloc(2);
    ext.writeUInt16BE(len);
  } else {
    head.push(m | 127);
    ext = Buffer.alloc(8);
    ext.writeBigUInt64BE(BigInt(len));
  }
  // A fixed mask keeps replays byte-identical.
  const mask = Buffer.from([0x12, 0x34, 0x56, 0x78]);
  const body = f.masked ? Buffer.from(payload.map((b, i) => b ^ mask[i & 3])) : payload;
  return Buffer.concat([Buffer.from(head), ext, f.masked ? mask : Buffer.alloc(0), body]);
}

export function wsUpgradeBytes(i: WsInput, t: FuzzTarget): Buffer {
  const q = new URLSearchParams(i.query);
  if (i.auth === 'query') q.append('token', t.token);
  const qs = q.toString();
  const lines = [`GET ${i.path}${qs ? `?${qs}` : ''} HTTP/1.1`];
  if (i.host === 'ok') lines.push(`Host: 127.0.0.1:${t.httpPort}`);
  else if (i.host !== 'missing') lines.push(`Host: ${i.host}`);
  if (i.upgrade) lines.push(`Upgrade: ${i.upgrade}`);
  if (i.connection) lines.push(`Connection: ${i.connection}`);
  if (i.version) lines.push(`Sec-WebSocket-Version: ${i.version}`);
  if (i.key !== 'missing') lines.push(`Sec-WebSocket-Key: ${i.key === 'valid' ? 'dGhlIHNhbXBsZSBub25jZQ==' : i.key === 'short' ? 'AAAA' : i.key}`);
  if (i.origin !== null) lines.push(`Origin: ${i.origin === 'same' ? `http://127.0.0.1:${t.httpPort}` : i.origin}`);
  if (i.protocol !== null) lines.push(`Sec-WebSocket-Protocol: ${i.protocol}`);
  if (i.auth === 'header') lines.push(`Authorization: Bearer ${t.token}`);
  if (i.auth === 'wrong') lines.push('Authorization: Bearer not-the-token');
  return Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1');
}

export async function runWs(i: WsInput, t: FuzzTarget): Promise<Outcome> {
  let switched = false;
  const r = await exchange(t.httpPort, [wsUpgradeBytes(i, t)], {
    ms: DEADLINE_MS,
    end: true,
    afterHead: (head, s) => {
      switched = head.startsWith('HTTP/1.1 101');
      if (switched) for (const f of i.frames) s.write(wsFrameBytes(f));
      if (switched && i.finish === 'close-then-end') s.write(wsFrameBytes({ fin: true, rsv: 0, opcode: 8, masked: true, payload: b64(Buffer.from([0x03, 0xe8])), length: 'exact' }));
      if (i.finish === 'reset') s.resetAndDestroy();
      else s.end();
    },
  });
  if (i.finish === 'reset') return { note: switched ? '101 then reset' : `${r.statusLine ?? 'no status'} then reset` };
  if (!r.statusLine && r.timedOut) return { hang: `upgrade unanswered within ${DEADLINE_MS} ms` };
  if (r.timedOut) return { hang: `${r.statusLine}: connection still open ${DEADLINE_MS} ms after the client's ${switched ? `${i.frames.length} frames and ` : ''}half-close` };
  return { note: (r.statusLine ?? `closed without a status line${r.error ? ` (${r.error})` : ''}`).replace(/^HTTP\/1\.1 /, '') };
}

export const websocket: Surface<WsInput> = {
  name: 'websocket',
  what: 'WebSocket: upgrade query, token, Origin, Host, subprotocols, version, key; frames of any opcode, mask, RSV bits and length',
  arbitrary: () => wsArb(),
  run: runWs,
};
