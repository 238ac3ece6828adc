import * as grpc from '@grpc/grpc-js';
import { spawn } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect as http2Connect } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import protobuf from 'protobufjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecoderConnection, InferenceV2Connection, subscribe, type FrameAck, type FrameMessage } from '../../clients/lib/index.js';
import { loadServerConfig, type ServerConfigInput } from '../../src/server/config.js';
import { CortexcastServer } from '../../src/server/server.js';
import { PROTO_PATH } from '../../src/server/grpc-service.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { repoRoot } from '../helpers/paths.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

/**
 * Server hardening: each test names the hostile or unlucky input it guards against and what the
 * server must do instead.
 */
let bundleDir: string;
const neurons = 200;

beforeAll(async () => {
  const data = await tinyDataset({}, neurons);
  bundleDir = join(mkdtempSync(join(tmpdir(), 'cc-hard-')), 'ridge');
  await trainRidge({ data, out: bundleDir, quiet: true, log: () => undefined });
}, 120_000);

const quiet = (): void => undefined;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const frame = (seed: number): Float32Array => Float32Array.from({ length: neurons }, (_, i) => ((i * 7 + seed * 13) % 11) / 5);

async function startServer(extra: Partial<ServerConfigInput> = {}): Promise<CortexcastServer> {
  const cfg = loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'ridge', path: bundleDir }], shutdownGraceMs: 2000, ...extra } });
  return new CortexcastServer(cfg, quiet).start();
}

async function metric(http: string, pattern: RegExp): Promise<number> {
  const text = await (await fetch(`${http}/metrics`)).text();
  const m = pattern.exec(text);
  return m ? Number(m[1]) : 0;
}

/** Raw bytes to a port; resolves with what came back when the peer closes (or after ms). */
function rawExchange(port: number, bytes: string | Buffer, ms = 1000): Promise<string> {
  return new Promise((resolve) => {
    const s: Socket = netConnect(port, '127.0.0.1');
    let got = '';
    s.on('data', (b) => (got += b.toString('latin1')));
    s.on('error', () => undefined);
    s.on('close', () => resolve(got));
    s.write(bytes);
    setTimeout(() => (s.destroy(), resolve(got)), ms);
  });
}

const until = async (cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> => {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error('condition not met in time');
    await sleep(10);
  }
};

describe('no input on any port ends the process', () => {
  let server: CortexcastServer;
  let http: string;
  beforeAll(async () => {
    server = await startServer();
    http = `http://127.0.0.1:${server.httpPort}`;
  });
  afterAll(() => server.close());

  it('a WebSocket upgrade or GET whose target is not a path is answered 400, and the server keeps serving', async () => {
    const upgrade = (target: string): string =>
      `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${server.httpPort}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;
    for (const target of ['//x:99999', 'http://[', '//', '*', '/ws?stream='])
      expect(await rawExchange(server.httpPort, upgrade(target))).toMatch(/^HTTP\/1\.1 (400|404)/);
    expect(await rawExchange(server.httpPort, `GET //x:99999 HTTP/1.1\r\nHost: localhost:${server.httpPort}\r\n\r\n`)).toMatch(/^HTTP\/1\.1 400/);
    expect((await fetch(`${http}/healthz`)).status).toBe(200);
  });

  it('garbage on the gRPC port, a half-spoken HTTP/2 preface and WebSocket abuse cost only their own connection', async () => {
    await rawExchange(server.grpcPort, Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 131) % 256)), 300);
    await rawExchange(server.grpcPort, 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n' + '\x00\x00\x04\x08\x00\x00\x00\x00\x00'.repeat(50), 300);
    await rawExchange(server.httpPort, 'GARBAGE\r\n\r\n', 300);
    const sub = subscribe(http);
    await sub.hello;
    // Over ws's 64 KiB maxPayload, then an unmasked frame: ws errors on its side, the server closes the socket.
    sub.socket.send(Buffer.alloc(200 * 1024));
    await until(() => sub.socket.readyState === 3);
    const sub2 = subscribe(http);
    await sub2.hello;
    (sub2.socket as unknown as { _socket: Socket })._socket.write(Buffer.from([0x81, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f]));
    await until(() => sub2.socket.readyState === 3);
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    expect((await conn.decode('ridge', frame(1))).pixels).toHaveLength(64 * 36);
    conn.close();
  });

  it('an empty or repeated stream= is refused instead of subscribing to everything; absolute-form targets work', async () => {
    await expect(subscribe(http, { stream: '' }).hello).rejects.toThrow(/400/);
    const up = (q: string): string => `GET /ws?${q} HTTP/1.1\r\nHost: 127.0.0.1:${server.httpPort}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`;
    expect(await rawExchange(server.httpPort, up('stream=a&stream='))).toMatch(/^HTTP\/1\.1 400[^]*given 2 times/);
    expect(await rawExchange(server.httpPort, `GET http://127.0.0.1:${server.httpPort}/healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`)).toMatch(/^HTTP\/1\.1 200/);
  });
});

describe('one scheduler for streams and unary calls', () => {
  it('a stream frame that arrives while Decode calls hold the only worker is decoded without a later frame', async () => {
    const server = await startServer({ workers: 1, maxBatch: 1 });
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const rig = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const unary = Array.from({ length: 60 }, (_, i) => conn.decode('ridge', frame(i)));
    const acks: FrameAck[] = [];
    const s = rig.openStream((a) => acks.push(a));
    s.send({ streamId: 'last', model: 'ridge', sequence: 1, responses: frame(1) });
    s.end();
    await Promise.race([s.done, sleep(5000).then(() => Promise.reject(new Error('the half-closed stream never ended')))]);
    expect(acks).toMatchObject([{ sequence: 1, status: 'DECODED' }]);
    expect((await Promise.all(unary)).every((r) => r.pixels.length === 64 * 36)).toBe(true);
    conn.close();
    rig.close();
    await server.close();
  });

  it('Decode calls in flight during reloads all return, and old pools are closed', async () => {
    const server = await startServer({ workers: 1 });
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const before = server.registry.get('ridge').pool;
    const calls: Promise<unknown>[] = [];
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 40; i++) calls.push(conn.decode('ridge', frame(i), { timeoutMs: 10_000 }));
      await server.reload();
    }
    const results = await Promise.race([Promise.allSettled(calls), sleep(8000).then(() => 'hung' as const)]);
    expect(results).not.toBe('hung');
    const settled = results as PromiseSettledResult<unknown>[];
    // Every call is answered: decoded by the pool of its time or the next one.
    expect(settled.filter((r) => r.status === 'fulfilled').length).toBe(calls.length);
    expect(before.isClosed).toBe(true);
    expect(server.scheduler.queueDepth('ridge')).toBe(0);
    conn.close();
    await server.close();
  });

  it('deadlines and the queue bound are honoured; cancelled calls leave the queue; nothing is left waiting', async () => {
    // limits.maxDecodeWaitMs caps how long a call may wait for a worker whatever its own deadline.
    const server = await startServer({ workers: 1, maxBatch: 1, limits: { maxQueuedDecodes: 400, maxDecodeWaitMs: 3 } });
    const http = `http://127.0.0.1:${server.httpPort}`;
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const codes = async (calls: Promise<unknown>[]): Promise<Map<number, number>> => {
      const m = new Map<number, number>();
      for (const r of await Promise.allSettled(calls)) {
        const code = r.status === 'fulfilled' ? 0 : (r.reason as grpc.ServiceError).code;
        m.set(code, (m.get(code) ?? 0) + 1);
      }
      return m;
    };
    // 300 calls at once on one worker, one frame per run: the late ones must fail, not run.
    const timed = await codes(Array.from({ length: 300 }, (_, i) => conn.decode('ridge', frame(i), { timeoutMs: i % 2 ? 30 : undefined })));
    expect(timed.get(grpc.status.DEADLINE_EXCEEDED) ?? 0).toBeGreaterThan(0);
    await until(async () => (await metric(http, /cortexcast_unary_decodes_total\{model="ridge",code="DEADLINE_EXCEEDED"\} (\d+)/)) > 0);
    // Cancelled by the client while queued: removed, and the server counts them.
    const ac = new AbortController();
    const cancelled = Array.from({ length: 200 }, (_, i) => conn.decode('ridge', frame(i), { signal: ac.signal }));
    ac.abort();
    const c = await codes(cancelled);
    expect(c.get(grpc.status.CANCELLED) ?? 0).toBeGreaterThan(0);
    expect([...c.keys()].every((k) => k === 0 || k === grpc.status.CANCELLED || k === grpc.status.DEADLINE_EXCEEDED)).toBe(true);
    await until(() => server.scheduler.queueDepth('ridge') === 0);
    await server.close();
    // The queue bound: more waiting calls than limits.maxQueuedDecodes are refused at once.
    const small = await startServer({ workers: 1, maxBatch: 1, limits: { maxQueuedDecodes: 2 } });
    const conn2 = new DecoderConnection(`127.0.0.1:${small.grpcPort}`);
    const bounded = await codes(Array.from({ length: 100 }, (_, i) => conn2.decode('ridge', frame(i))));
    expect(bounded.get(grpc.status.RESOURCE_EXHAUSTED) ?? 0).toBeGreaterThan(0);
    expect(bounded.get(0) ?? 0).toBeGreaterThan(0);
    conn.close();
    conn2.close();
    await small.close();
  });

  it('a model whose workers all died fails its waiters at once, reports unhealthy, and a reload brings it back', async () => {
    const server = await startServer({ workers: 2 });
    const http = `http://127.0.0.1:${server.httpPort}`;
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const pool = server.registry.get('ridge').pool;
    await pool.killWorker(0);
    await pool.killWorker(1);
    await until(() => pool.alive === 0);
    const t0 = Date.now();
    await expect(conn.decode('ridge', frame(1))).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE, details: expect.stringMatching(/no live inference worker/) });
    expect(Date.now() - t0).toBeLessThan(1000);
    const acks: FrameAck[] = [];
    const s = conn.openStream((a) => acks.push(a));
    s.send({ streamId: 'dead', model: 'ridge', sequence: 1, responses: frame(1) });
    s.end();
    await s.done;
    expect(acks[0]).toMatchObject({ status: 'DROPPED', reason: expect.stringMatching(/^no_workers/) });
    const h = await fetch(`${http}/healthz`);
    expect(h.status).toBe(503);
    expect(await h.json()).toMatchObject({ broken: ['ridge'] });
    await conn.reloadModels();
    expect((await conn.decode('ridge', frame(2))).pixels).toHaveLength(64 * 36);
    expect((await fetch(`${http}/healthz`)).status).toBe(200);
    conn.close();
    await server.close();
  });

  it('SIGTERM exits within shutdownGraceMs while a client keeps calling Decode, which is refused UNAVAILABLE once draining', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cc-sig-'));
    const grpcPort = 20000 + Math.floor(Math.random() * 20000);
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ models: [{ name: 'ridge', path: bundleDir }], grpcPort, httpPort: 0, shutdownGraceMs: 1500 }));
    const child = spawn(process.execPath, [join(repoRoot, 'bin/cortexcast.js'), 'serve', '--config', join(dir, 'c.json')], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    child.stderr.on('data', (b: Buffer) => (log += b.toString()));
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    await until(() => log.includes('"serving"'), 30_000);
    const conn = new DecoderConnection(`127.0.0.1:${grpcPort}`);
    let running = true;
    const errors: number[] = [];
    const loops = Array.from({ length: 4 }, async () => {
      while (running)
        await conn.decode('ridge', frame(3), { timeoutMs: 2000 }).catch((e: grpc.ServiceError) => {
          errors.push(e.code);
        });
    });
    await sleep(300);
    const t0 = Date.now();
    child.kill('SIGTERM');
    const code = await Promise.race([exited, sleep(6000).then(() => 'still running' as const)]);
    const took = Date.now() - t0;
    running = false;
    await Promise.all(loops);
    conn.close();
    if (code === 'still running') child.kill('SIGKILL');
    expect(code).toBe(0);
    expect(took).toBeLessThan(1500 + 1000);
    expect(errors.every((c) => c === grpc.status.UNAVAILABLE || c === grpc.status.CANCELLED || c === grpc.status.DEADLINE_EXCEEDED)).toBe(true);
  }, 60_000);
});

describe('streams: ownership, acks, bad messages, idle, sequences', () => {
  let server: CortexcastServer;
  let http: string;
  let conn: DecoderConnection;
  beforeAll(async () => {
    server = await startServer({ limits: { streamIdleMs: 400, handshakeTimeoutMs: 300, connectionIdleMs: 500, maxStreamsPerConnection: 5 } });
    http = `http://127.0.0.1:${server.httpPort}`;
    conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
  });
  afterAll(async () => {
    conn.close();
    await server.close();
  });

  it('one call owns a stream id: a second call using it is refused per frame and cannot drop the owner\'s frames', async () => {
    const other = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const a: FrameAck[] = [];
    const b: FrameAck[] = [];
    const sa = conn.openStream((x) => a.push(x));
    const sb = other.openStream((x) => b.push(x));
    sa.send({ streamId: 'owned', model: 'ridge', sequence: 1, responses: frame(1) });
    await until(() => a.length === 1);
    sb.send({ streamId: 'owned', model: 'ridge', sequence: 2, responses: frame(2) });
    sb.send({ streamId: 'mine', model: 'ridge', sequence: 1, responses: frame(2) });
    sb.end();
    await sb.done;
    expect(b[0]).toMatchObject({ sequence: 2, status: 'REJECTED', reason: expect.stringMatching(/^CC_ERR_STREAM_IN_USE: stream_id 'owned' belongs to another open call/) });
    expect(b[1]).toMatchObject({ sequence: 1, status: 'DECODED' });
    sa.send({ streamId: 'owned', model: 'ridge', sequence: 3, responses: frame(3) });
    sa.end();
    await sa.done;
    expect(a.map((x) => x.status)).toEqual(['DECODED', 'DECODED']);
    // Released when its owner ends.
    const c: FrameAck[] = [];
    const sc = other.openStream((x) => c.push(x));
    sc.send({ streamId: 'owned', model: 'ridge', sequence: 1, responses: frame(4) });
    sc.end();
    await sc.done;
    expect(c[0].status).toBe('DECODED');
    expect(await metric(http, /cortexcast_frames_rejected_total\{reason="stream_in_use"\} (\d+)/)).toBe(1);
    other.close();
  });

  it('a client that reads acks slowly still gets one ack per frame: the server stops reading instead of skipping or buffering', async () => {
    // Its own server: the idle limit of this block would end a stream held back 1.5 s.
    const server = await startServer({ limits: { streamIdleMs: 5000 } });
    const http = `http://127.0.0.1:${server.httpPort}`;
    const rig = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const acks: FrameAck[] = [];
    const s = rig.openStream((x) => acks.push(x));
    const call = (s as unknown as { call: { pause(): void; resume(): void } }).call;
    call.pause();
    const total = 6000;
    const rejectedBefore = await metric(http, /cortexcast_frames_rejected_total\{reason="neuron_count"\} (\d+)/);
    // Half invalid (REJECTED acks), half valid.
    for (let i = 1; i <= total; i++) s.send({ streamId: 'slow', model: 'ridge', sequence: i, responses: i % 2 ? new Float32Array(3) : frame(i) });
    await sleep(1500);
    // Not reading acks holds the rig back: the server has not taken all frames in.
    const taken = (await metric(http, /cortexcast_frames_rejected_total\{reason="neuron_count"\} (\d+)/)) - rejectedBefore;
    expect(taken).toBeLessThan(total / 2);
    call.resume();
    s.end();
    await s.done;
    expect(acks).toHaveLength(total);
    expect(new Set(acks.map((a) => a.sequence)).size).toBe(total);
    rig.close();
    await server.close();
  }, 60_000);

  it('a client that never reads its acks loses its stream after limits.streamIdleMs, freeing the slot', async () => {
    const rig = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const s = rig.openStream();
    (s as unknown as { call: { pause(): void } }).call.pause();
    for (let i = 1; i <= 6000; i++) s.send({ streamId: 'deaf', model: 'ridge', sequence: i, responses: new Float32Array(3) });
    await until(async () => (await metric(http, /cortexcast_streams (\d+)/)) === 0, 5000);
    rig.close();
  });

  it('bytes that are not a ResponseFrame are rejected with an ack and counted; the stream goes on', async () => {
    const root = protobuf.loadSync(PROTO_PATH);
    const Frame = root.lookupType('cortexcast.v1.ResponseFrame');
    const Ack = root.lookupType('cortexcast.v1.FrameAck');
    const encode = (seq: number): Buffer =>
      Buffer.from(Frame.encode(Frame.fromObject({ streamId: 'raw', model: 'ridge', sequence: seq, responses: Buffer.from(frame(seq).buffer) })).finish());
    const raw = new grpc.Client(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure());
    const call = raw.makeBidiStreamRequest('/cortexcast.v1.Decoder/StreamFrames', (b: Buffer) => b, (b: Buffer) => Ack.toObject(Ack.decode(b), { longs: String, enums: String, defaults: true }));
    const acks: Record<string, unknown>[] = [];
    call.on('data', (a: Record<string, unknown>) => acks.push(a));
    const done = new Promise<grpc.StatusObject>((r) => call.on('status', r));
    call.on('error', () => undefined);
    call.write(encode(1));
    call.write(Buffer.from([0x2a, 0x05, 0x01])); // responses claim 5 bytes, one follows
    call.write(encode(2));
    call.end();
    expect((await done).code).toBe(grpc.status.OK);
    // Acks are per frame, not in order: a rejection is answered at once, a decode when it is done.
    expect(acks.map((a) => `${a.sequence}:${a.status}`).sort()).toEqual(['0:REJECTED', '1:DECODED', '2:DECODED']);
    expect(acks.find((a) => a.status === 'REJECTED')?.reason).toMatch(/^CC_ERR_MALFORMED_FRAME: message is not a valid ResponseFrame/);
    expect(await metric(http, /cortexcast_frames_rejected_total\{reason="malformed_frame"\} (\d+)/)).toBe(1);
    raw.close();
  });

  it('a message over limits.maxMessageBytes is rejected with its own sequence and the stream goes on; one over the transport limit ends the stream after the earlier acks', async () => {
    const acks: FrameAck[] = [];
    const s = conn.openStream((a) => acks.push(a));
    for (let i = 1; i <= 5; i++) s.send({ streamId: 'big2', model: 'ridge', sequence: i, responses: frame(i) });
    s.send({ streamId: 'big2', model: 'ridge', sequence: 6, responses: new Float32Array(400_000) });
    s.send({ streamId: 'big2', model: 'ridge', sequence: 7, responses: frame(7) });
    s.end();
    await s.done;
    expect(acks.map((a) => Number(a.sequence)).sort((x, y) => x - y)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(acks.find((a) => a.sequence === 6)).toMatchObject({ status: 'REJECTED', reason: `CC_ERR_MESSAGE_TOO_LARGE: message of 1600036 bytes is over limits.maxMessageBytes (${2 ** 20} bytes)` });
    expect(acks.find((a) => a.sequence === 7)?.status).toBe('DECODED');
    expect(await metric(http, /cortexcast_frames_rejected_total\{reason="message_too_large"\} (\d+)/)).toBe(1);
    const acks2: FrameAck[] = [];
    const s2 = conn.openStream((a) => acks2.push(a));
    for (let i = 1; i <= 5; i++) s2.send({ streamId: 'huge2', model: 'ridge', sequence: i, responses: frame(i) });
    s2.send({ streamId: 'huge2', model: 'ridge', sequence: 6, responses: new Float32Array(1_000_000) });
    await expect(s2.done).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringMatching(/^CC_ERR_MESSAGE_TOO_LARGE: message of \d+ bytes is over the transport limit/) });
    expect(acks2.map((a) => Number(a.sequence)).sort()).toEqual([1, 2, 3, 4, 5]);
    // Half-closing right after a message over the transport limit must not turn its status into OK.
    for (let round = 0; round < 5; round++) {
      const s3 = conn.openStream();
      s3.send({ streamId: `big3-${round}`, model: 'ridge', sequence: 1, responses: new Float32Array(1_000_000) });
      s3.end();
      await expect(s3.done).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
    }
  });

  it('one call owns at most limits.maxStreamIdsPerCall ids; a long unknown model name is cut in the error', async () => {
    const acks: FrameAck[] = [];
    const s = conn.openStream((a) => acks.push(a));
    for (let i = 0; i < 20; i++) s.send({ streamId: `many-${i}`, model: 'ridge', sequence: 1, responses: frame(i) });
    s.send({ streamId: 'x', model: 'm'.repeat(100_000), sequence: 1, responses: frame(1) });
    s.end();
    await s.done;
    const refused = acks.filter((a) => a.status === 'REJECTED');
    expect(refused.length).toBe(5);
    expect(refused[0].reason).toMatch(/^CC_ERR_STREAM_ID: stream_id 'many-\d+': this call already owns 16 stream ids \(limits.maxStreamIdsPerCall\)/);
    await expect(conn.getModel('m'.repeat(100_000))).rejects.toMatchObject({ code: grpc.status.NOT_FOUND, details: expect.stringMatching(/\.\.\.' \(100000 characters\)/) });
    expect((await conn.decode('ridge', frame(1))).pixels).toHaveLength(2304);
  });

  it('idle streams, silent TCP connections and call-less HTTP/2 connections are closed; the per-connection stream limit is advertised', async () => {
    const idle = conn.openStream();
    idle.send({ streamId: 'idle', model: 'ridge', sequence: 1, responses: frame(1) });
    await expect(idle.done).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE, details: expect.stringMatching(/limits.streamIdleMs/) });
    const t0 = Date.now();
    const silent = await Promise.all(Array.from({ length: 20 }, () => rawExchange(server.grpcPort, '', 3000).then(() => Date.now() - t0)));
    expect(Math.max(...silent)).toBeLessThan(2500);
    const session = http2Connect(`http://127.0.0.1:${server.grpcPort}`);
    session.on('error', () => undefined);
    await new Promise<void>((r) => session.once('remoteSettings', () => r()));
    expect(session.remoteSettings.maxConcurrentStreams).toBe(5);
    const closed = await Promise.race([new Promise<string>((r) => session.once('goaway', () => r('goaway'))), sleep(3000).then(() => 'held')]);
    expect(closed).toBe('goaway');
    session.destroy();
  });

  it('sequences: 0, duplicates and out-of-order are rejected; values beyond 2^53 come back exact in acks and frames', async () => {
    const sub = subscribe(http, { stream: 'seq' });
    await sub.hello;
    const it = sub[Symbol.asyncIterator]();
    const acks: FrameAck[] = [];
    const s = conn.openStream((a) => acks.push(a));
    const big = 2n ** 53n + 1n;
    // The client library refuses 0 itself; the server must too, so send it by hand.
    (s as unknown as { call: grpc.ClientDuplexStream<unknown, unknown> }).call.write({ streamId: 'seq', model: 'ridge', sequence: '0', responses: Buffer.from(frame(1).buffer), unitIds: [], imageId: '0', stimulus: Buffer.alloc(0), acquiredAtUs: '0' });
    s.send({ streamId: 'seq', model: 'ridge', sequence: big, responses: frame(1) });
    s.send({ streamId: 'seq', model: 'ridge', sequence: big, responses: frame(2) });
    s.send({ streamId: 'seq', model: 'ridge', sequence: 5, responses: frame(3) });
    s.send({ streamId: 'seq', model: 'ridge', sequence: 2n ** 64n - 1n, responses: frame(4) });
    s.end();
    await s.done;
    expect(() => s.send({ streamId: 'seq', model: 'ridge', sequence: -1, responses: frame(1) })).toThrow(/outside 1 \.\. 2\^64 - 1/);
    expect(() => s.send({ streamId: 'seq', model: 'ridge', sequence: 2 ** 60, responses: frame(1) })).toThrow(/not an exact integer/);
    const r = acks.filter((a) => a.status === 'REJECTED');
    expect(r.map((a) => a.sequence)).toEqual([0, big, 5]);
    expect(r[0].reason).toBe('CC_ERR_SEQUENCE: sequence 0: sequence numbers start at 1');
    expect(r[1].reason).toMatch(/^CC_ERR_SEQUENCE: sequence 9007199254740993: not after 9007199254740993/);
    expect(acks.filter((a) => a.status !== 'REJECTED').map((a) => a.sequence)).toEqual([big, 2n ** 64n - 1n]);
    const seen: FrameMessage[] = [];
    while (seen.length < 2) seen.push((await it.next()).value as FrameMessage);
    expect(seen.map((f) => f.seq)).toEqual([big, 2n ** 64n - 1n]);
    sub.close();
  });
});

describe('rejections, clocks and HTTP auth', () => {
  it('every rejection reason has its error code in the ack and its own metric label', async () => {
    const server = await startServer();
    const http = `http://127.0.0.1:${server.httpPort}`;
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const acks: FrameAck[] = [];
    const s = conn.openStream((a) => acks.push(a));
    const bytes = new Uint8Array(neurons * 4 + 1);
    s.send({ streamId: 'r', model: 'ridge', sequence: 1, responses: new Float32Array(3) });
    const nan = frame(1);
    nan[3] = NaN;
    s.send({ streamId: 'r', model: 'ridge', sequence: 2, responses: nan });
    s.send({ streamId: 'r', model: 'nope', sequence: 3, responses: frame(1) });
    s.send({ streamId: '', model: 'ridge', sequence: 4, responses: frame(1) });
    s.send({ streamId: 'r', model: 'ridge', sequence: 5, responses: frame(1), unitIds: [1, 2] });
    s.send({ streamId: 'r', model: 'ridge', sequence: 6, responses: frame(1), stimulus: { width: 10, height: 10, pixels: new Uint8Array(7) } });
    s.send({ streamId: 'r', model: 'ridge', sequence: 7, responses: new Float32Array(bytes.buffer, 0, 0) });
    // An odd byte count: the client library sends whole floats, so write the message by hand.
    (s as unknown as { call: grpc.ClientDuplexStream<unknown, unknown> }).call.write({ streamId: 'r', model: 'ridge', sequence: '8', responses: Buffer.from(bytes), unitIds: [], imageId: '0', stimulus: Buffer.alloc(0), acquiredAtUs: '0' });
    s.send({ streamId: 'r', model: 'ridge', sequence: 9, responses: frame(1) });
    s.send({ streamId: 'r', model: 'ridge', sequence: 9, responses: frame(1) });
    s.end();
    await s.done;
    const reason = new Map(acks.map((a) => [Number(a.sequence), a.reason]));
    expect(reason.get(1)).toMatch(/^CC_ERR_NEURON_COUNT: frame has 3 neurons/);
    expect(reason.get(2)).toMatch(/^CC_ERR_NOT_FINITE/);
    expect(reason.get(3)).toMatch(/^CC_ERR_UNKNOWN_MODEL/);
    expect(reason.get(4)).toMatch(/^CC_ERR_STREAM_ID/);
    expect(reason.get(5)).toBe(`CC_ERR_UNIT_IDS: unit_ids differ from model ridge's neuron order (${neurons} units): the frame lists 2`);
    expect(reason.get(6)).toBe('CC_ERR_STIMULUS: stimulus is 7 bytes for 10x10 (at most 256x256, one byte per pixel)');
    expect(reason.get(7)).toMatch(/^CC_ERR_NEURON_COUNT: frame has 0 neurons/);
    expect(reason.get(8)).toBe(`CC_ERR_RESPONSE_BYTES: responses are ${neurons * 4 + 1} bytes, not a whole number of float32 values (model ridge expects ${neurons} neurons = ${neurons * 4} bytes)`);
    expect(acks.filter((a) => a.sequence === 9).map((a) => a.status).sort()).toEqual(['DECODED', 'REJECTED']);
    const text = await (await fetch(`${http}/metrics`)).text();
    for (const label of ['neuron_count', 'not_finite', 'unknown_model', 'stream_id', 'unit_ids', 'stimulus', 'response_bytes', 'sequence'])
      expect(text).toMatch(new RegExp(`cortexcast_frames_rejected_total\\{reason="${label}"\\} [1-9]`));
    expect(text).not.toMatch(/cortexcast_frames_rejected_total\{reason="internal"\}/);
    conn.close();
    await server.close();
  });

  it('implausible acquisition times are counted as clock problems, not latency', async () => {
    const server = await startServer();
    const http = `http://127.0.0.1:${server.httpPort}`;
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const s = conn.openStream();
    const nowUs = Date.now() * 1000;
    const stamps = [-5, 1, nowUs + 3_600e6, nowUs - 3_600e6, nowUs];
    stamps.forEach((t, i) => s.send({ streamId: 'clock', model: 'ridge', sequence: i + 1, responses: frame(i), acquiredAtUs: t }));
    // One at a time so none is superseded.
    s.end();
    await s.done;
    const text = await (await fetch(`${http}/metrics`)).text();
    const count = (re: RegExp): number => Number(re.exec(text)?.[1] ?? 0);
    const problems = count(/cortexcast_clock_problems_total\{model="ridge",kind="past"\} (\d+)/) + count(/cortexcast_clock_problems_total\{model="ridge",kind="future"\} (\d+)/);
    const observed = count(/cortexcast_end_to_end_seconds_count\{model="ridge",origin="acquired"\} (\d+)/);
    const decoded = count(/cortexcast_frames_decoded_total\{model="ridge"\} (\d+)/);
    expect(problems).toBeGreaterThanOrEqual(decoded >= 5 ? 4 : 1);
    expect(observed).toBeLessThanOrEqual(1);
    expect(count(/cortexcast_end_to_end_seconds_bucket\{le="\+Inf",model="ridge",origin="acquired"\} (\d+)/)).toBe(observed);
    conn.close();
    await server.close();
  });

  it('unary auth failures are counted; --protect-http puts /metrics, /healthz and /api/models behind the token', async () => {
    const token = 'a-very-long-shared-token';
    const server = await startServer({ auth: { token, protectHttp: true } });
    const http = `http://127.0.0.1:${server.httpPort}`;
    const bad = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    await expect(bad.decode('ridge', frame(1))).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    await expect(bad.listModels()).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    // The Open Inference Protocol service sits behind the same token.
    const v2 = new InferenceV2Connection(`127.0.0.1:${server.grpcPort}`);
    await expect(v2.infer('ridge', [frame(1)])).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    await expect(v2.modelMetadata('ridge')).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    v2.close();
    const v2ok = new InferenceV2Connection(`127.0.0.1:${server.grpcPort}`, { token });
    expect((await v2ok.infer('ridge', [frame(1)])).image).toHaveLength(2304);
    v2ok.close();
    for (const p of ['/metrics', '/healthz', '/api/models']) expect((await fetch(`${http}${p}`)).status).toBe(401);
    const auth = { headers: { authorization: `Bearer ${token}` } };
    expect((await fetch(`${http}/healthz`, auth)).status).toBe(200);
    const text = await (await fetch(`${http}/metrics`, auth)).text();
    expect(text).toMatch(/cortexcast_frames_rejected_total\{reason="unauthenticated"\} ([5-9]|\d\d)/);
    expect(() => loadServerConfig({ flags: { models: [{ path: bundleDir }], auth: { protectHttp: true } } })).toThrow(/protectHttp: needs auth.token/);
    bad.close();
    await server.close();
  });
});

describe('fifo batches, concurrent reloads, reflection auth, slow and inflated requests', () => {
  it('fifo: a batch never takes two frames of one stream, and a stream\'s frames decode in order', async () => {
    const server = await startServer({ framePolicy: 'fifo', queueDepth: 64, workers: 1, maxBatch: 8 });
    const http = `http://127.0.0.1:${server.httpPort}`;
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const sub = subscribe(http, { stream: 'fifo' });
    await sub.hello;
    const it = sub[Symbol.asyncIterator]();
    const s = conn.openStream();
    for (let i = 1; i <= 40; i++) s.send({ streamId: 'fifo', model: 'ridge', sequence: i, responses: frame(i) });
    s.end();
    await s.done;
    const seqs: number[] = [];
    while (seqs.length < 40) seqs.push(Number((await it.next()).value.seq));
    expect(seqs).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
    const sum = await metric(http, /cortexcast_decode_batch_frames_sum\{model="ridge"\} (\d+)/);
    const count = await metric(http, /cortexcast_decode_batch_frames_count\{model="ridge"\} (\d+)/);
    expect(sum).toBe(count);
    sub.close();
    conn.close();
    await server.close();
  });

  it('reloads requested at once share loads (at most two), and all answer', async () => {
    const lines: string[] = [];
    const cfg = loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'ridge', path: bundleDir }], shutdownGraceMs: 2000 } });
    const server = await new CortexcastServer(cfg, (_level, msg) => lines.push(msg)).start();
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const replies = await Promise.all(Array.from({ length: 8 }, () => conn.reloadModels()));
    expect(replies.every((r) => r.models[0].name === 'ridge')).toBe(true);
    expect(lines.filter((l) => l === 'models reloaded').length).toBeLessThanOrEqual(2);
    // Malformed frames are each answered, but logged at most once a second.
    const acks: FrameAck[] = [];
    const raw = new grpc.Client(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure());
    const call = raw.makeBidiStreamRequest('/cortexcast.v1.Decoder/StreamFrames', (b: Buffer) => b, (b: Buffer) => b);
    call.on('data', (a: FrameAck) => acks.push(a));
    call.on('error', () => undefined);
    const done = new Promise((r) => call.on('status', r));
    for (let i = 0; i < 50; i++) call.write(Buffer.from([0x2a, 0x05, 0x01]));
    call.end();
    await done;
    expect(acks).toHaveLength(50);
    expect(lines.filter((l) => l === 'malformed frame rejected').length).toBe(1);
    raw.close();
    conn.close();
    await server.close();
  });

  it('reflection needs the token when one is set; a unary request that never finishes arriving is ended', async () => {
    const token = 'a-very-long-shared-token';
    const server = await startServer({ auth: { token }, limits: { requestTimeoutMs: 300 } });
    const session = http2Connect(`http://127.0.0.1:${server.grpcPort}`);
    session.on('error', () => undefined);
    const trailersOf = (path: string, body: Buffer, end: boolean, headers: Record<string, string> = {}): Promise<Record<string, unknown>> =>
      new Promise((resolve) => {
        const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...headers }, { endStream: false });
        req.on('response', (h) => h['grpc-status'] !== undefined && resolve(h));
        req.on('trailers', (h) => resolve(h));
        req.on('error', () => undefined);
        req.write(body);
        if (end) req.end();
      });
    // A length-prefixed ListServices request, no token.
    const listServices = Buffer.from([0, 0, 0, 0, 2, 0x3a, 0x00]);
    const refl = await trailersOf('/grpc.reflection.v1.ServerReflection/ServerReflectionInfo', listServices, true);
    expect(refl['grpc-status']).toBe(String(grpc.status.UNAUTHENTICATED));
    const t0 = Date.now();
    const half = await trailersOf('/cortexcast.v1.Decoder/ListModels', Buffer.from([0, 0, 0, 0, 10]), false, { authorization: `Bearer ${token}` });
    expect(half['grpc-status']).toBe(String(grpc.status.DEADLINE_EXCEEDED));
    expect(Date.now() - t0).toBeLessThan(2000);
    session.destroy();
    await server.close();
  });

  it('a gzip message that inflates past the transport limit gets the cortexcast code; a handshake dripped a byte at a time is cut at the deadline', async () => {
    const server = await startServer({ limits: { handshakeTimeoutMs: 400 } });
    const http = `http://127.0.0.1:${server.httpPort}`;
    const gz = new DecoderConnection(`127.0.0.1:${server.grpcPort}`, { channelOptions: { 'grpc.default_compression_algorithm': 2 } });
    const s = gz.openStream();
    s.send({ streamId: 'bomb', model: 'ridge', sequence: 1, responses: new Float32Array(1_000_000) });
    await expect(s.done).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringMatching(/^CC_ERR_MESSAGE_TOO_LARGE: .*transport limit/) });
    expect(await metric(http, /cortexcast_frames_rejected_total\{reason="message_too_large"\} (\d+)/)).toBe(1);
    gz.close();
    const t0 = Date.now();
    const closedAt = await new Promise<number>((resolve) => {
      const sock = netConnect(server.grpcPort, '127.0.0.1');
      sock.on('error', () => undefined);
      const drip = setInterval(() => sock.writable && sock.write('P'), 100);
      sock.on('close', () => {
        clearInterval(drip);
        resolve(Date.now() - t0);
      });
    });
    expect(closedAt).toBeLessThan(1200);
    await server.close();
  });
});
