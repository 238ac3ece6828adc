/**
 * The latency floor for `npm run bench:serve`: a bare grpc-js -> msgpackr -> ws relay of the same frames,
 * with no validation, scaling, model or acks. Same transport choices as the real server (own listener
 * with TCP_NODELAY, loopback). Prints `{"grpcPort":..,"httpPort":..}` on stdout when ready.
 */
import * as grpc from '@grpc/grpc-js';
import { createServer as createHttp } from 'node:http';
import { createServer as createNet, type AddressInfo } from 'node:net';
import { Packr } from 'msgpackr';
import { WebSocketServer, type WebSocket } from 'ws';
import { loadProto } from '../src/server/grpc-service.js';

const packr = new Packr({ useRecords: false });
const now = (): number => performance.timeOrigin + performance.now();
const subs = new Map<string, Set<WebSocket>>();

const { service } = loadProto(2 ** 20);
const server = new grpc.Server({ 'grpc.max_receive_message_length': 2 ** 20 });
server.addService(service, {
  StreamFrames(call: grpc.ServerDuplexStream<{ streamId: string; sequence: number; acquiredAtUs: number; responses: Buffer }, unknown>) {
    call.on('data', (m) => {
      const ingested = now();
      const msg = packr.pack({ type: 'frame', stream: m.streamId, seq: m.sequence, pixels: m.responses.subarray(0, 2304), t: { acquired: m.acquiredAtUs / 1000, ingested, sent: now() } });
      for (const ws of subs.get(m.streamId) ?? []) if (ws.bufferedAmount < 2 ** 20) ws.send(msg);
    });
    call.on('end', () => call.end());
  },
});
const injector = server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
const net = createNet({ noDelay: true }, (s) => injector.injectConnection(s));
const http = createHttp();
const wss = new WebSocketServer({ server: http, path: '/ws' });
wss.on('connection', (ws, req) => {
  const stream = new URL(req.url ?? '/', 'http://x').searchParams.get('stream') ?? '*';
  if (!subs.has(stream)) subs.set(stream, new Set());
  subs.get(stream)!.add(ws);
  ws.send(packr.pack({ type: 'hello', subscription: { stream }, models: [] }));
  ws.on('close', () => subs.get(stream)!.delete(ws));
});
net.listen(0, '127.0.0.1', () => {
  http.listen(0, '127.0.0.1', () => {
    process.stdout.write(JSON.stringify({ grpcPort: (net.address() as AddressInfo).port, httpPort: (http.address() as AddressInfo).port }) + '\n');
  });
});
process.on('SIGTERM', () => process.exit(0));
