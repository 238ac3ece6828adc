import { createServer as createHttp, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttps } from 'node:https';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, extname, join, normalize } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { WebSocketServer } from 'ws';
import { tokenMatches } from './auth.js';
import type { ServerConfig } from './config.js';
import { encodeMessage, type Fanout } from './fanout.js';
import type { ServerMetrics } from './metrics.js';
import { modelFacts, type ModelFacts, type ModelRegistry } from './model-registry.js';

const VIEWER_DIR = fileURLToPath(new URL('../../clients/viewer/', import.meta.url));
const MSGPACKR_BROWSER = join(dirname(createRequire(import.meta.url).resolve('msgpackr')), 'index-no-eval.min.js');
const TYPES: Record<string, string> = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8', '.png': 'image/png', '.svg': 'image/svg+xml' };

export interface HttpDeps {
  cfg: ServerConfig;
  registry: ModelRegistry;
  fanout: Fanout;
  metrics: ServerMetrics;
  status: () => { serving: boolean; state: string };
  beforeScrape: () => void;
}

/**
 * The HTTP side: /metrics (Prometheus), /healthz, /api/models, the viewer at /, and WebSocket
 * subscriptions at /ws?stream=<id|*>&model=<name|*>&float=1 (token as `Authorization: Bearer` header
 * or ?token=).
 */
export function createHttpServer(d: HttpDeps): { server: Server; wss: WebSocketServer } {
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    void route(d, req, res).catch((e: Error) => {
      res.writeHead(500, { 'content-type': 'text/plain' });
      res.end(`internal error: ${e.message}`);
    });
  };
  const server = d.cfg.tls ? createHttps({ cert: readFileSync(d.cfg.tls.cert), key: readFileSync(d.cfg.tls.key) }, handler) : createHttp(handler);
  const wss = new WebSocketServer({ noServer: true, maxPayload: 64 * 1024 });
  server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname !== '/ws') {
      socket.end('HTTP/1.1 404 Not Found\r\n\r\n');
      return;
    }
    if (d.cfg.auth.token) {
      const header = String(req.headers.authorization ?? '').replace(/^Bearer\s+/i, '');
      const given = header || url.searchParams.get('token') || '';
      if (!tokenMatches(given, d.cfg.auth.token)) {
        d.metrics.framesRejected.inc({ reason: 'unauthenticated' });
        socket.end('HTTP/1.1 401 Unauthorized\r\n\r\n');
        return;
      }
    }
    if (!d.status().serving) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\n\r\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      const model = url.searchParams.get('model') || '*';
      if (model !== '*' && !d.registry.has(model)) {
        ws.close(1008, `unknown model '${model}'`.slice(0, 120));
        return;
      }
      const sub = { stream: url.searchParams.get('stream') || '*', model, float: url.searchParams.get('float') === '1' };
      if (!d.fanout.add(ws, sub)) {
        ws.close(1013, `subscriber limit reached (${d.cfg.limits.maxSubscribers})`);
        return;
      }
      ws.send(encodeMessage({ type: 'hello', subscription: sub, models: modelList(d) }), { binary: true });
    });
  });
  return { server, wss };
}

const modelList = (d: HttpDeps): ModelFacts[] => d.registry.all().map(modelFacts);

async function route(d: HttpDeps, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://x');
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD' }).end();
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
