import { createServer as createHttp, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { createServer as createHttps } from 'node:https';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, extname, join, normalize } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';
import type { AddressInfo } from 'node:net';
import { bearer, hostAllowed, originAllowed, ownHosts, tokenMatches } from './auth.js';
import { ccError } from '../common/errors.js';
import type { ServerConfig } from './config.js';
import { encodeMessage, type Fanout } from './fanout.js';
import type { ServerMetrics } from './metrics.js';
import { modelFacts, type ModelFacts, type ModelRegistry } from './model-registry.js';
import { RESPONSE_FEED_PATH, upgradeResponseFeed, type ResponseFeed } from './response-feed.js';

const VIEWER_DIR = fileURLToPath(new URL('../../clients/viewer/', import.meta.url));
const MSGPACKR_BROWSER = join(dirname(createRequire(import.meta.url).resolve('msgpackr')), 'index-no-eval.min.js');
const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.png': 'image/png', '.svg': 'image/svg+xml' };

export interface HttpDeps {
  cfg: ServerConfig;
  registry: ModelRegistry;
  fanout: Fanout;
  /** Raw responses with their stimuli at /ws/responses (token only; calibration). */
  responses?: ResponseFeed;
  metrics: ServerMetrics;
  status: () => { serving: boolean; state: string; broken?: string[] };
  /** New subscribers are taken only while the server runs. */
  accepting: () => boolean;
  beforeScrape: () => void;
  log: (level: 'info' | 'warn' | 'error', msg: string, fields?: Record<string, unknown>) => void;
}

/** A request target that is not a path (`//x:99999`, `http://[`, ...) is the client's error, never ours. */
function parseTarget(raw: string | undefined): URL | undefined {
  try {
    // origin-form (/path?query), or absolute-form (http://host/path), which HTTP/1.1 servers must accept
    if (raw && /^https?:\/\//i.test(raw)) return new URL(raw);
    return raw?.startsWith('/') && !raw.startsWith('//') ? new URL(raw, 'http://x') : undefined;
  } catch {
    return undefined;
  }
}

const tokenOf = (req: IncomingMessage, url: URL): string => bearer(req.headers.authorization) || url.searchParams.get('token') || '';

const refuse = (socket: Duplex, code: number, text: string, body = ''): void => {
  if (socket.writable) socket.end(`HTTP/1.1 ${code} ${text}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  else socket.destroy();
};

/**
 * The HTTP side: /metrics (Prometheus), /healthz, /api/models, the viewer at /, and WebSocket
 * subscriptions at /ws?stream=<id|*>&model=<name|*>&float=1 (token as `Authorization: Bearer` header
 * or ?token=).
 */
export function createHttpServer(d: HttpDeps): { server: Server; wss: WebSocketServer } {
  // The names this server answers to, once its port is known (it may have been 0: any free port).
  let hosts: Set<string> | undefined;
  const names = (): Set<string> => (hosts ??= ownHosts(d.cfg, (server.address() as AddressInfo | null)?.port ?? d.cfg.httpPort));
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const foreign = foreignRequest(d, req, names());
    if (foreign) {
      res.writeHead(foreign.status, { 'content-type': 'text/plain', connection: 'close' }).end(foreign.body);
      return;
    }
    route(d, req, res).catch((e: Error) => {
      d.log('error', 'http handler failed', { url: req.url?.slice(0, 200), error: e.stack ?? String(e) });
      if (res.headersSent) return void res.destroy();
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end('internal error');
    });
  };
  const server = d.cfg.tls ? createHttps({ cert: readFileSync(d.cfg.tls.cert), key: readFileSync(d.cfg.tls.key) }, handler) : createHttp(handler);
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    // Until ws takes the socket over, a reset peer must cost this socket only.
    socket.on('error', () => socket.destroy());
    const foreign = foreignRequest(d, req, names());
    if (foreign) return refuse(socket, foreign.status, foreign.status === 403 ? 'Forbidden' : 'Misdirected Request', foreign.body);
    try {
      upgrade(d, wss, req, socket, head);
    } catch (e) {
      d.log('error', 'websocket upgrade failed', { url: req.url?.slice(0, 200), error: (e as Error).stack ?? String(e) });
      refuse(socket, 500, 'Internal Server Error');
    }
  });
  return { server, wss };
}

/**
 * A request this server must not answer: a Host header that is not one of its names (a page on
 * another site whose DNS name was rebound to this address), or, on a WebSocket upgrade, a browser
 * Origin that is not the server's own or an allowed one (browsers let any page open a WebSocket
 * anywhere; the token does not help, as a page can be handed it). Requests without an Origin come
 * from programs, not pages, and pass.
 */
function foreignRequest(d: HttpDeps, req: IncomingMessage, hosts: Set<string>): { status: number; body: string } | undefined {
  const defaultPort = d.cfg.tls ? 443 : 80;
  // An absolute-form target (GET http://host/path) names the host itself, and HTTP/1.1 says it wins over Host.
  const host = /^https?:\/\//i.test(req.url ?? '') ? (parseTarget(req.url)?.host ?? req.headers.host) : req.headers.host;
  if (!hostAllowed(host, hosts, defaultPort)) {
    d.metrics.callsRefused.inc({ reason: 'bad_host' });
    return { status: 421, body: `${ccError('CC_ERR_HOST', JSON.stringify(String(host ?? '').slice(0, 100))).message}\n` };
  }
  const origin = req.headers.origin;
  if (origin !== undefined && req.headers.upgrade && !originAllowed(origin, hosts, d.cfg.auth.allowedOrigins)) {
    d.metrics.callsRefused.inc({ reason: 'bad_origin' });
    return { status: 403, body: `${ccError('CC_ERR_ORIGIN', JSON.stringify(origin.slice(0, 100))).message}\n` };
  }
  return undefined;
}

/** Subscriptions: /ws?stream=<id|*>&model=<name|*>&float=1; a missing parameter means '*', an empty one is an error. */
function upgrade(d: HttpDeps, wss: WebSocketServer, req: IncomingMessage, socket: Duplex, head: Buffer): void {
  const url = parseTarget(req.url);
  if (!url) return refuse(socket, 400, 'Bad Request', 'request target must be a path such as /ws?stream=*\n');
  if (url.pathname === RESPONSE_FEED_PATH && d.responses)
    return upgradeResponseFeed(d.responses, wss, req, socket, head, { url, token: tokenOf(req, url), serverToken: d.cfg.auth.token, accepting: d.accepting(), onUnauthorised: () => d.metrics.framesRejected.inc({ reason: 'unauthenticated' }) });
  if (url.pathname !== '/ws') return refuse(socket, 404, 'Not Found');
  if (d.cfg.auth.token && !tokenMatches(tokenOf(req, url), d.cfg.auth.token)) {
    d.metrics.framesRejected.inc({ reason: 'unauthenticated' });
    return refuse(socket, 401, 'Unauthorized');
  }
  if (!d.accepting()) return refuse(socket, 503, 'Service Unavailable');
  const q = url.searchParams;
  for (const key of ['stream', 'model'] as const) {
    const values = q.getAll(key);
    if (values.length > 1) return refuse(socket, 400, 'Bad Request', `${key} is given ${values.length} times: give it once\n`);
    if (values.length && !values[0]) return refuse(socket, 400, 'Bad Request', `${key}= is empty: give a name, or * for all\n`);
  }
  const model = q.get('model') ?? '*';
  if (model !== '*' && !d.registry.has(model)) return refuse(socket, 404, 'Not Found', `unknown model '${model.slice(0, 64)}'\n`);
  const sub = { stream: q.get('stream') ?? '*', model, float: q.get('float') === '1' };
  wss.handleUpgrade(req, socket, head, (ws) => {
    // Subscribers only listen: an error on one (bad frame, oversized message, reset) closes that one.
    ws.on('error', () => ws.terminate());
    if (!d.fanout.add(ws, sub)) {
      ws.close(1013, `subscriber limit reached (${d.cfg.limits.maxSubscribers})`);
      return;
    }
    ws.send(encodeMessage({ type: 'hello', subscription: sub, models: modelList(d) }), { binary: true });
  });
}

const modelList = (d: HttpDeps): ModelFacts[] => d.registry.all().map(modelFacts);

async function route(d: HttpDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = parseTarget(req.url);
  if (!url) {
    res.writeHead(400, { 'content-type': 'text/plain' }).end('request target must be a path such as /metrics\n');
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD' }).end();
    return;
  }
  const api = url.pathname === '/metrics' || url.pathname === '/healthz' || url.pathname === '/api/models';
  if (api && d.cfg.auth.protectHttp && !tokenMatches(tokenOf(req, url), d.cfg.auth.token ?? '')) {
    d.metrics.framesRejected.inc({ reason: 'unauthenticated' });
    res.writeHead(401, { 'content-type': 'text/plain', 'www-authenticate': 'Bearer' }).end('missing or wrong token (Authorization: Bearer <token>)\n');
    return;
  }
  if (url.pathname === '/metrics') {
    d.beforeScrape();
    res.writeHead(200, { 'content-type': d.metrics.registry.contentType });
    res.end(await d.metrics.registry.metrics());
    return;
  }
  if (url.pathname === '/healthz') {
    const s = d.status();
    res.writeHead(s.serving ? 200 : 503, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ ...s, models: d.registry.all().map((m) => ({ name: m.name, provider: m.provider })) }));
    return;
  }
  if (url.pathname === '/api/models') {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ models: modelList(d), tokenRequired: !!d.cfg.auth.token }));
    return;
  }
  if (!d.cfg.viewer) {
    res.writeHead(404).end();
    return;
  }
  if (url.pathname === '/vendor/msgpackr.js') {
    // The browser build that ships in the msgpackr package: no bundling step needed.
    res.writeHead(200, { 'content-type': TYPES['.js'], 'cache-control': 'max-age=3600' });
    res.end(readFileSync(MSGPACKR_BROWSER));
    return;
  }
  const rel = url.pathname === '/' ? 'index.html' : normalize(url.pathname).replace(/^([/\\])+/, '');
  const file = join(VIEWER_DIR, rel);
  if (!file.startsWith(VIEWER_DIR) || !existsSync(file)) {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
    return;
  }
  res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-cache' });
  res.end(readFileSync(file));
}
