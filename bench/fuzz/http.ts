import fc from 'fast-check';
import { exchange } from './raw-tcp.js';
import { b64, DEADLINE_MS, unb64, type FuzzTarget, type Outcome, type Surface } from './types.js';

/**
 * HTTP/1.x on the HTTP port, written byte by byte (no client library to tidy the request up):
 * methods, request targets (paths, absolute-form, traversal, non-paths), versions, Host, auth,
 * arbitrary headers, bodies with right, wrong or no lengths, chunked or not, complete or cut short.
 * Oracle: after the client half-closes, the server answers (a status line) or closes the connection
 * before the deadline.
 */
export interface HttpInput {
  method: string;
  target: string;
  version: string;
  host: 'ok' | 'missing' | 'twice' | string;
  auth: 'none' | 'header' | 'query' | 'wrong';
  headers: [string, string][];
  body: string;
  length: 'exact' | 'none' | 'chunked' | 'bad-chunked' | number;
  /** false: the header block is cut off before its blank line. */
  complete: boolean;
}

const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,16}$/);
const printable = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 60 });

export const targetArb = fc.oneof(
  { weight: 6, arbitrary: fc.constantFrom('/', '/metrics', '/healthz', '/api/models', '/ws', '/vendor/msgpackr.js', '/index.html', '/viewer.js', '/favicon.ico') },
  {
    weight: 3,
    arbitrary: fc.constantFrom('/ws/responses', '/../../../etc/passwd', '/%2e%2e/%2e%2e/etc/passwd', '/..%2f..%2fetc/passwd', '//x:99999', 'http://[', '*', '//', 'http://127.0.0.1/metrics', 'https://x/healthz', '/metrics?token=TOKEN', '/api/models?%zz', '/\\..\\..\\etc', '/%00', '/ws?stream=*&model=*'),
  },
  { weight: 2, arbitrary: printable.map((s) => `/${s.replace(/ /g, '%20')}`) },
  { weight: 1, arbitrary: fc.integer({ min: 1000, max: 80_000 }).map((n) => `/${'a'.repeat(n)}`) },
);

export const httpArb = (): fc.Arbitrary<HttpInput> =>
  fc.record({
    method: fc.oneof({ weight: 6, arbitrary: fc.constantFrom('GET', 'HEAD') }, { weight: 3, arbitrary: fc.constantFrom('POST', 'PUT', 'DELETE', 'OPTIONS', 'CONNECT', 'TRACE', 'PATCH', 'PRI', 'get', '') }, { weight: 1, arbitrary: token }),
    target: targetArb,
    version: fc.oneof({ weight: 8, arbitrary: fc.constant('HTTP/1.1') }, { weight: 2, arbitrary: fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/0.9', 'HTTP/1.1x', '', 'HTTP/9.9') }),
    host: fc.oneof({ weight: 6, arbitrary: fc.constant('ok') }, { weight: 2, arbitrary: fc.constantFrom('missing', 'twice', 'evil.example', 'localhost', '', '[::1]:1', 'a b') }, { weight: 1, arbitrary: printable }),
    auth: fc.constantFrom('none' as const, 'header' as const, 'query' as const, 'wrong' as const),
    headers: fc.array(
      fc.oneof(
        { weight: 3, arbitrary: fc.tuple(fc.constantFrom('Connection', 'Expect', 'Transfer-Encoding', 'Content-Length', 'Upgrade', 'Origin', 'Accept-Encoding', 'Range', 'If-None-Match', 'X-Forwarded-For'), printable) },
        { weight: 3, arbitrary: fc.tuple(token, printable) },
        { weight: 1, arbitrary: fc.tuple(fc.string({ maxLength: 12 }), fc.string({ maxLength: 30 })) },
        { weight: 1, arbitrary: fc.tuple(fc.constant('X-Big'), fc.integer({ min: 1000, max: 70_000 }).map((n) => 'b'.repeat(n))) },
      ),
      { maxLength: 4 },
    ),
    body: fc.oneof({ weight: 4, arbitrary: fc.constant('') }, { weight: 2, arbitrary: fc.uint8Array({ maxLength: 512 }).map(b64) }),
    length: fc.oneof({ weight: 4, arbitrary: fc.constant('exact' as const) }, { weight: 2, arbitrary: fc.constantFrom('none' as const, 'chunked' as const, 'bad-chunked' as const) }, { weight: 1, arbitrary: fc.integer({ min: -1, max: 2 ** 20 }) }),
    complete: fc.oneof({ weight: 9, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
  });

export function httpRequestBytes(i: HttpInput, t: FuzzTarget): Buffer {
  const target = i.target.replace('TOKEN', t.token) + (i.auth === 'query' ? `${i.target.includes('?') ? '&' : '?'}token=${t.token}` : '');
  const lines = [`${i.method} ${target}${i.version ? ` ${i.version}` : ''}`];
  const host = `127.0.0.1:${t.httpPort}`;
  if (i.host === 'ok') lines.push(`Host: ${host}`);
  else if (i.host === 'twice') lines.push(`Host: ${host}`, 'Host: other.example');
  else if (i.host !== 'missing') lines.push(`Host: ${i.host}`);
  if (i.auth === 'header') lines.push(`Authorization: Bearer ${t.token}`);
  if (i.auth === 'wrong') lines.push('Authorization: Bearer not-the-token');
  for (const [k, v] of i.headers) lines.push(`${k}: ${v}`);
  const body = unb64(i.body);
  let payload = body;
  if (i.length === 'exact') lines.push(`Content-Length: ${body.length}`);
  else if (typeof i.length === 'number') lines.push(`Content-Length: ${i.length}`);
  else if (i.length === 'chunked' || i.length === 'bad-chunked') {
    lines.push('Transfer-Encoding: chunked');
    payload = i.length === 'chunked' ? Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from('\r\n0\r\n\r\n')]) : Buffer.concat([Buffer.from('zz\r\n'), body]);
  }
  const head = lines.join('\r\n') + (i.complete ? '\r\n\r\n' : '\r\n');
  return Buffer.concat([Buffer.from(head, 'latin1'), i.complete ? payload : Buffer.alloc(0)]);
}

export async function runHttp(i: HttpInput, t: FuzzTarget): Promise<Outcome> {
  const r = await exchange(t.httpPort, [httpRequestBytes(i, t)], { ms: DEADLINE_MS, end: true });
  if (r.timedOut && !r.statusLine) return { hang: `${i.method} ${i.target.slice(0, 60)}: no status line and no close within ${DEADLINE_MS} ms after the client half-closed (${r.bytes.length} bytes back)` };
  return { note: r.statusLine ? r.statusLine.replace(/^HTTP\/1\.[01] /, '') : r.closed ? `closed without a status line${r.error ? ` (${r.error})` : ''}` : 'open after the answer' };
}

export const http: Surface<HttpInput> = {
  name: 'http',
  what: 'HTTP/1.x: methods, targets, versions, Host, auth, headers, bodies and lengths, cut-off header blocks',
  arbitrary: () => httpArb(),
  run: runHttp,
};
