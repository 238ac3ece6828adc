import * as grpc from '@grpc/grpc-js';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect as netConnect, type Socket } from 'node:net';
import { hostname, networkInterfaces, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { DecoderConnection, InferenceV2Connection, type FrameAck } from '../../clients/lib/index.js';
import { loadServerConfig, type ServerConfig, type ServerConfigInput } from '../../src/server/config.js';
import { CortexcastServer } from '../../src/server/server.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { clientToken } from '../../src/common/token-file.js';
import { repoRoot } from '../helpers/paths.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

/**
 * The server on a hostile network: callers without the token cannot hold the gRPC port's
 * connections or make it read their requests, pages of other sites cannot reach the HTTP side,
 * reloads need the admin token and are rate-limited, model facts leak no paths, and every frame a
 * stream accepted gets its final ack however the stream ends.
 */
let bundleDir: string;
let dataDir: string;
const neurons = 200;
const token = 'rig-token-0123456789abcdef';
const adminToken = 'admin-token-0123456789abcdef';

beforeAll(async () => {
  dataDir = await tinyDataset({}, neurons);
  bundleDir = join(mkdtempSync(join(tmpdir(), 'cc-net-')), 'ridge');
  await trainRidge({ data: dataDir, out: bundleDir, quiet: true, log: () => undefined });
}, 120_000);

const quiet = (): void => undefined;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const frame = (seed: number): Float32Array => Float32Array.from({ length: neurons }, (_, i) => ((i * 7 + seed * 13) % 11) / 5);

function config(extra: Partial<ServerConfigInput> = {}): ServerConfig {
  return loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'ridge', path: bundleDir }], shutdownGraceMs: 2000, ...extra } });
}

const startServer = (extra: Partial<ServerConfigInput> = {}): Promise<CortexcastServer> => new CortexcastServer(config(extra), quiet).start();

/** A metric's value from the server's own registry (summed over label sets matching `labels`). */
async function metric(server: CortexcastServer, name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = (await server.metrics.registry.getMetricsAsJSON()).find((x) => x.name === name);
  if (!m) throw new Error(`no metric ${name}`);
  return (m.values as { value: number; labels: Record<string, string | number> }[]).filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0);
}

const until = async (cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> => {
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > ms) throw new Error('condition not met in time');
    await sleep(10);
  }
};

/** A connection of its own (grpc-js shares connections between clients with the same options). */
const ownChannel = (i: number): grpc.ChannelOptions => ({ 'grpc.use_local_subchannel_pool': 1, 'cc.test.channel': i });

/** Open Health/Watch on a connection of its own; resolves with its status code when it ends. */
function watch(port: number, i: number, md = new grpc.Metadata()): { client: grpc.Client; ended: Promise<number> } {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), ownChannel(i));
  const call = client.makeServerStreamRequest('/grpc.health.v1.Health/Watch', (b: Buffer) => b, (b: Buffer) => b, Buffer.alloc(0), md);
  call.on('data', () => undefined);
  const ended = new Promise<number>((resolve) => call.on('status', (s: grpc.StatusObject) => resolve(s.code)));
  call.on('error', () => undefined);
  return { client, ended };
}

/** A TCP connection that never speaks (its `closed` turns true when the server closes it). */
const silentSocket = (port: number): Promise<Socket> =>
  new Promise((resolve) => {
    const s = netConnect(port, '127.0.0.1', () => resolve(s));
    s.on('error', () => undefined);
    s.on('data', () => undefined);
  });

const bearerMd = (t: string): grpc.Metadata => {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${t}`);
  return md;
};

describe('gRPC connections and calls from callers without the token', () => {
  it('Health/Watch needs the token and is capped; connections held by callers without it never keep a rig holding it out', async () => {
    const server = await startServer({ auth: { token }, limits: { maxConnections: 24, reservedConnections: 4, maxConnectionsPerPeer: 1000, maxWatchCalls: 2 } });
    const attackers = Array.from({ length: 24 }, (_, i) => watch(server.grpcPort, i));
    // Every unauthenticated Watch is refused from its metadata.
    const codes = await Promise.race([Promise.all(attackers.map((a) => a.ended)), sleep(3000).then(() => 'held' as const)]);
    expect(codes).toEqual(Array(24).fill(grpc.status.UNAUTHENTICATED));
    // Their connections stay open (idle), filling the pool for connections that never proved the token...
    const rig = new DecoderConnection(`127.0.0.1:${server.grpcPort}`, { token, channelOptions: ownChannel(100) });
    // ...yet the rig gets a slot at once.
    expect((await rig.decode('ridge', frame(1), { timeoutMs: 3000 })).pixels).toHaveLength(2304);
    expect(await metric(server, 'cortexcast_connections_refused_total', { reason: 'evicted' })).toBeGreaterThan(0);
    expect(await metric(server, 'cortexcast_calls_refused_total', { reason: 'unauthenticated' })).toBe(24);
    // With the token, Watch works, up to limits.maxWatchCalls at once.
    const held = [watch(server.grpcPort, 200, bearerMd(token)), watch(server.grpcPort, 201, bearerMd(token))];
    await sleep(300);
    const third = watch(server.grpcPort, 202, bearerMd(token));
    expect(await third.ended).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(await metric(server, 'cortexcast_calls_refused_total', { reason: 'watch_limit' })).toBe(1);
    for (const c of [...attackers, ...held, third]) c.client.close();
    rig.close();
    await server.close();
  });

  it('a call without the token is refused before its body is read: no request message is deserialised, nothing reaches the decoder', async () => {
    const server = await startServer({ auth: { token }, workers: 1 });
    const addr = `127.0.0.1:${server.grpcPort}`;
    // 8 callers, each with ~1 MB Decode and ModelInfer requests.
    const big = new Float32Array(250_000).fill(0.5);
    const calls: Promise<unknown>[] = [];
    const conns: { close(): void }[] = [];
    for (let i = 0; i < 8; i++) {
      const d = new DecoderConnection(addr, { channelOptions: ownChannel(i) });
      const v2 = new InferenceV2Connection(addr, { channelOptions: ownChannel(50 + i) });
      conns.push(d, v2);
      for (let k = 0; k < 3; k++) calls.push(d.decode('ridge', big), v2.infer('ridge', [big]));
    }
    const settled = await Promise.allSettled(calls);
    expect(settled.every((r) => r.status === 'rejected' && (r.reason as grpc.ServiceError).code === grpc.status.UNAUTHENTICATED)).toBe(true);
    expect(await metric(server, 'cortexcast_grpc_messages_read_total')).toBe(0);
    expect(await metric(server, 'cortexcast_unary_decodes_total')).toBe(0);
    expect(await metric(server, 'cortexcast_frames_rejected_total', { reason: 'message_too_large' })).toBe(0);
    // The counter does count: a call with the token is read.
    const ok = new DecoderConnection(addr, { token });
    expect((await ok.decode('ridge', frame(2))).pixels).toHaveLength(2304);
    expect(await metric(server, 'cortexcast_grpc_messages_read_total')).toBe(1);
    for (const c of [...conns, ok]) c.close();
    await server.close();
  });

  it('silent TCP connections cannot fill the port: the oldest unproven ones make room, and one address holds at most maxConnectionsPerPeer', async () => {
    const server = await startServer({ auth: { token }, limits: { maxConnections: 24, reservedConnections: 4, maxConnectionsPerPeer: 1000, handshakeTimeoutMs: 20_000 } });
    const silent = await Promise.all(Array.from({ length: 40 }, () => silentSocket(server.grpcPort)));
    const rig = new DecoderConnection(`127.0.0.1:${server.grpcPort}`, { token, channelOptions: ownChannel(1) });
    const t0 = Date.now();
    expect((await rig.decode('ridge', frame(3), { timeoutMs: 3000 })).pixels).toHaveLength(2304);
    expect(Date.now() - t0).toBeLessThan(2000);
    rig.close();
    for (const s of silent) s.destroy();
    await server.close();

    const perPeer = await startServer({ limits: { maxConnectionsPerPeer: 8, handshakeTimeoutMs: 20_000 } });
    const many = await Promise.all(Array.from({ length: 20 }, () => silentSocket(perPeer.grpcPort)));
    await until(() => many.filter((s) => !s.closed).length <= 8);
    await sleep(100);
    expect(many.filter((s) => !s.closed).length).toBe(8);
    const conn = new DecoderConnection(`127.0.0.1:${perPeer.grpcPort}`, { channelOptions: ownChannel(2) });
    expect((await conn.decode('ridge', frame(4), { timeoutMs: 3000 })).pixels).toHaveLength(2304);
    expect(await metric(perPeer, 'cortexcast_connections_refused_total', { reason: 'evicted' })).toBeGreaterThanOrEqual(12);
    conn.close();
    for (const s of many) s.destroy();
    await perPeer.close();
  });

  it('an open call cannot hold a connection past limits.maxConnectionAgeMs + grace', async () => {
    const server = await startServer({ auth: { token }, limits: { maxConnectionAgeMs: 300, maxConnectionAgeGraceMs: 300 } });
    const w = watch(server.grpcPort, 1, bearerMd(token));
    const t0 = Date.now();
    const code = await Promise.race([w.ended, sleep(4000).then(() => 'still open' as const)]);
    expect(code).not.toBe('still open');
    expect(Date.now() - t0).toBeLessThan(3000);
    w.client.close();
    await server.close();
  });
});

/** One HTTP request with chosen headers (fetch does not let a caller set Host). */
function get(port: number, path: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, headers }, (res) => {
      let body = '';
      res.on('data', (b: Buffer) => (body += b.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** Open /ws with the given Origin (undefined: none, as non-browser clients do); resolves with the HTTP status or 101. */
function openWs(port: number, origin: string | undefined, query = '', headers: Record<string, string> = {}): Promise<{ status: number; frames: Promise<number> }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/ws?stream=*${query}`, { ...(origin ? { origin } : {}), headers });
    ws.on('unexpected-response', (_req, res) => resolve({ status: res.statusCode ?? 0, frames: Promise.resolve(0) }));
    ws.on('error', () => undefined);
    ws.on('open', () => {
      let n = 0;
      ws.on('message', () => n++);
      resolve({ status: 101, frames: sleep(300).then(() => (ws.close(), n)) });
    });
  });
}

describe('the HTTP side against pages of other sites', () => {
  let server: CortexcastServer;
  beforeAll(async () => {
    server = await startServer({ auth: { allowedOrigins: ['https://lab.example'], allowedHosts: ['viewer.lab.example'] } });
  });
  afterAll(() => server.close());

  it('a WebSocket from a foreign Origin is refused 403; the own origin, listed origins and clients without an Origin subscribe', async () => {
    const p = server.httpPort;
    expect((await openWs(p, 'http://evil.example')).status).toBe(403);
    expect((await openWs(p, `http://evil.example:${p}`)).status).toBe(403);
    expect((await openWs(p, 'null')).status).toBe(403);
    for (const own of [`http://127.0.0.1:${p}`, `http://localhost:${p}`, `http://[::1]:${p}`, 'https://lab.example', `http://viewer.lab.example:${p}`]) expect((await openWs(p, own)).status, own).toBe(101);
    expect((await openWs(p, undefined)).status).toBe(101);
    expect(await metric(server, 'cortexcast_calls_refused_total', { reason: 'bad_origin' })).toBe(3);
  });

  it('a foreign Host header (DNS rebinding) gets 421 on every path; the own names and listed hosts are answered', async () => {
    const p = server.httpPort;
    for (const path of ['/api/models', '/metrics', '/healthz', '/']) {
      const r = await get(p, path, { host: `evil.example:${p}` });
      expect(r.status, path).toBe(421);
      expect(r.body).toMatch(/^CC_ERR_HOST: /);
    }
    expect((await get(p, '/healthz', { host: `attacker.example` })).status).toBe(421);
    for (const host of [`127.0.0.1:${p}`, `localhost:${p}`, `[::1]:${p}`, 'viewer.lab.example', `viewer.lab.example:${p}`]) expect((await get(p, '/healthz', { host })).status, host).toBe(200);
  });

  it('with a token, a foreign Origin holding it gets no frames, and the HTTP endpoints need it by default', async () => {
    const s = await startServer({ auth: { token } });
    const p = s.httpPort;
    const conn = new DecoderConnection(`127.0.0.1:${s.grpcPort}`, { token });
    const stream = conn.openStream();
    let seq = 0;
    const timer = setInterval(() => stream.send({ streamId: 'page', model: 'ridge', sequence: ++seq, responses: frame(seq) }), 20);
    const foreign = await openWs(p, 'http://evil.example', `&token=${token}`);
    expect(foreign.status).toBe(403);
    const own = await openWs(p, `http://127.0.0.1:${p}`, `&token=${token}`);
    expect(own.status).toBe(101);
    expect(await own.frames).toBeGreaterThan(0);
    for (const path of ['/api/models', '/metrics', '/healthz']) expect((await get(p, path, { host: `127.0.0.1:${p}` })).status, path).toBe(401);
    expect((await get(p, '/api/models', { host: `127.0.0.1:${p}`, authorization: `Bearer ${token}` })).status).toBe(200);
    // protectHttp can still be turned off explicitly.
    expect(config({ auth: { token, protectHttp: false } }).auth.protectHttp).toBe(false);
    expect(config({ auth: { token } }).auth.protectHttp).toBe(true);
    clearInterval(timer);
    stream.end();
    await stream.done.catch(() => undefined);
    conn.close();
    await s.close();
  });
});

describe('reloads', () => {
  it('ReloadModels needs the admin token, runs one at a time and no more often than limits.minReloadIntervalMs', async () => {
    const server = await startServer({ auth: { token, adminToken }, limits: { minReloadIntervalMs: 60_000 } });
    const addr = `127.0.0.1:${server.grpcPort}`;
    const rig = new DecoderConnection(addr, { token });
    await expect(rig.reloadModels()).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED, details: expect.stringMatching(/^CC_ERR_ADMIN_TOKEN: ReloadModels needs the admin token/) });
    const none = new DecoderConnection(addr);
    await expect(none.reloadModels()).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    const admin = new DecoderConnection(addr, { token: adminToken });
    const before = server.registry.get('ridge').pool;
    // Requests at once share one reload.
    const replies = await Promise.all(Array.from({ length: 5 }, () => admin.reloadModels()));
    expect(replies.every((r) => r.models[0].name === 'ridge')).toBe(true);
    expect(before.isClosed).toBe(true);
    const after = server.registry.get('ridge').pool;
    await expect(admin.reloadModels()).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringMatching(/^CC_ERR_RELOAD_RATE: /) });
    expect(server.registry.get('ridge').pool).toBe(after);
    expect(await metric(server, 'cortexcast_calls_refused_total', { reason: 'reload_rate' })).toBe(1);
    expect(await metric(server, 'cortexcast_calls_refused_total', { reason: 'admin_token' })).toBe(1);
    // The admin token is good for everything the shared one is.
    expect((await admin.decode('ridge', frame(1))).pixels).toHaveLength(2304);
    for (const c of [rig, none, admin]) c.close();
    await server.close();
  });

  it('without an admin token, ReloadModels is refused from other hosts', async () => {
    const lan = Object.values(networkInterfaces())
      .flat()
      .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;
    if (!lan) {
      console.warn('SKIPPED: no non-loopback IPv4 address on this machine to call from another address');
      return;
    }
    const server = await startServer({ host: lan, auth: { allowedHosts: [] } });
    const conn = new DecoderConnection(`${lan}:${server.grpcPort}`);
    await expect(conn.reloadModels()).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED, details: expect.stringMatching(/^CC_ERR_ADMIN_TOKEN: ReloadModels from another host/) });
    expect((await conn.decode('ridge', frame(1))).pixels).toHaveLength(2304);
    conn.close();
    await server.close();
  });

  it('a worker that does not warm up within limits.warmupTimeoutMs fails the reload with its code; the old models keep serving', async () => {
    // A copy that can be changed after start: the server warms up normally, then the reload gets 1 ms.
    const cfg = structuredClone(config({ workers: 2 })) as ServerConfig & { limits: { warmupTimeoutMs: number } };
    const lines: string[] = [];
    const server = await new CortexcastServer(cfg, (_l, msg, f) => lines.push(`${msg} ${JSON.stringify(f ?? {})}`)).start();
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const before = server.registry.get('ridge').pool;
    cfg.limits.warmupTimeoutMs = 1;
    const t0 = Date.now();
    await expect(conn.reloadModels()).rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION, details: expect.stringMatching(/CC_ERR_WARMUP_TIMEOUT: inference worker of model ridge did not load and warm up within 1 ms/) });
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(server.registry.get('ridge').pool).toBe(before);
    expect(before.isClosed).toBe(false);
    expect((await conn.decode('ridge', frame(5))).pixels).toHaveLength(2304);
    conn.close();
    await server.close();
  });
});

describe('model facts', () => {
  it('ListModels and GetModel give what a client needs and no paths or host names', async () => {
    const server = await startServer();
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const { models } = await conn.listModels();
    const one = await conn.getModel('ridge');
    for (const m of [models[0], one]) {
      expect(m).toMatchObject({ name: 'ridge', kind: 'ridge', neurons, width: 64, height: 36, provider: 'cpu', workers: 1, bundlePath: '' });
      const text = JSON.stringify(m);
      for (const secret of [bundleDir, dataDir, tmpdir(), hostname()]) expect(text).not.toContain(secret);
      const summary = JSON.parse(m.manifestJson) as Record<string, unknown>;
      expect(summary).toMatchObject({ name: expect.any(String), kind: 'ridge', input: { neurons, unitIds: neurons }, output: { width: 64, height: 36 } });
      expect(JSON.stringify(summary)).not.toMatch(/"(dataset|host|unitIdsFile|stdScaleFile|file|config)"/);
    }
    conn.close();
    await server.close();
  });
});

describe('every frame a stream accepted gets its final ack', () => {
  it('a frame whose fan-out throws is acked DROPPED publish_failed and counted', async () => {
    const server = await startServer();
    server.fanout.publish = () => {
      throw new Error('subscriber socket exploded');
    };
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const acks: FrameAck[] = [];
    const s = conn.openStream((a) => acks.push(a));
    for (let i = 1; i <= 3; i++) s.send({ streamId: `boom${i}`, model: 'ridge', sequence: 1, responses: frame(i) });
    s.end();
    await Promise.race([s.done, sleep(3000)]);
    expect(acks).toHaveLength(3);
    expect(acks.every((a) => a.status === 'DROPPED' && /^publish_failed: .*subscriber socket exploded/.test(a.reason))).toBe(true);
    expect(await metric(server, 'cortexcast_frames_dropped_total', { reason: 'publish_failed' })).toBe(3);
    conn.close();
    await server.close();
  });

  it('shutdown under load, ten times: every accepted frame ends DECODED or DROPPED, none without its ack', async () => {
    const drainedFlags: boolean[] = [];
    for (let trial = 0; trial < 10; trial++) {
      const cfg = config({ workers: 1, maxBatch: 1, shutdownGraceMs: 1000, limits: { maxStreamIdsPerCall: 2000, maxQueuedDecodes: 1000 } });
      const server = await new CortexcastServer(cfg, (_l, msg, f) => msg === 'stopped' && drainedFlags.push(Boolean(f?.drained))).start();
      const addr = `127.0.0.1:${server.grpcPort}`;
      const acks: FrameAck[][] = [];
      const streams = Array.from({ length: 8 }, (_, k) => {
        const conn = new DecoderConnection(addr, { channelOptions: ownChannel(k) });
        const got: FrameAck[] = [];
        acks.push(got);
        const s = conn.openStream((a) => got.push(a));
        let ended = false;
        s.done.catch(() => undefined).finally(() => (ended = true));
        // A rig's pace: the next frame when the transport takes it.
        void (async () => {
          for (let i = 1; i <= 500 && !ended; i++) if (!s.send({ streamId: `s${k}-${i}`, model: 'ridge', sequence: 1, responses: frame(i) })) await Promise.race([s.drained(), s.done.catch(() => undefined)]);
        })();
        return { conn, s };
      });
      // Decode traffic alongside, on a connection of its own.
      const unary = new DecoderConnection(addr, { channelOptions: ownChannel(99) });
      const decodes = Array.from({ length: 100 }, (_, i) => unary.decode('ridge', frame(i)).catch(() => undefined));
      await until(async () => (await metric(server, 'cortexcast_frames_received_total')) > 1500, 10_000);
      await server.close();
      await Promise.race([Promise.all(decodes), sleep(3000)]);
      unary.close();
      await Promise.all(streams.map(({ s }) => Promise.race([s.done.catch(() => undefined), sleep(3000)])));
      const received = await metric(server, 'cortexcast_frames_received_total');
      // Every accepted frame had its final ack written before its stream's status.
      const written = (await metric(server, 'cortexcast_acks_total', { status: 'DECODED' })) + (await metric(server, 'cortexcast_acks_total', { status: 'DROPPED' }));
      expect(written, `trial ${trial}`).toBe(received);
      expect(await metric(server, 'cortexcast_acks_total', { status: 'REJECTED' })).toBe(0);
      // What reached the rigs: one final ack per frame, DECODED or DROPPED for the shutdown.
      const finals = acks.flat();
      expect(finals.every((a) => a.status === 'DECODED' || (a.status === 'DROPPED' && /^(shutdown|stream_ending): /.test(a.reason))), `trial ${trial}`).toBe(true);
      expect(finals.length).toBeLessThanOrEqual(received);
      for (const { conn } of streams) conn.close();
    }
    // The case that matters happened: the drain deadline passed with frames still being decoded.
    expect(drainedFlags.filter((d) => !d).length).toBeGreaterThan(0);
  }, 180_000);
});

describe('a stream that goes idle while its frames are being decoded', () => {
  // A decoder slow enough (8,000 neurons: a few ms a frame) that a backlog of 400 frames is still being
  // decoded when the idle timer fires, on an idle machine too.
  const wide = 8000;
  let wideBundle: string;
  beforeAll(async () => {
    const data = await tinyDataset({}, wide);
    wideBundle = join(mkdtempSync(join(tmpdir(), 'cc-net-wide-')), 'ridge');
    await trainRidge({ data, out: wideBundle, quiet: true, log: () => undefined });
  }, 180_000);

  it('frames that arrive while the stream is ending are acked DROPPED stream_ending, and counted', async () => {
    const server = await new CortexcastServer(config({ models: [{ name: 'wide', path: wideBundle }], workers: 1, maxBatch: 1, limits: { streamIdleMs: 300, maxStreamIdsPerCall: 1000 } }), quiet).start();
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const acks: FrameAck[] = [];
    const s = conn.openStream((a) => acks.push(a));
    const responses = new Float32Array(wide).fill(0.3);
    // A backlog on the one worker (each frame on its own stream id, so none supersedes another),
    // then silence: the idle timer fires while frames are still being decoded, and the call waits
    // for them before it ends.
    const burst = 400;
    for (let i = 1; i <= burst; i++) s.send({ streamId: `b${i}`, model: 'wide', sequence: 1, responses });
    await until(async () => (await metric(server, 'cortexcast_frames_received_total')) === burst, 10_000);
    await sleep(450);
    expect(await metric(server, 'cortexcast_frames_decoded_total')).toBeLessThan(burst);
    for (let i = 1; i <= 5; i++) s.send({ streamId: `late${i}`, model: 'wide', sequence: 1000 + i, responses });
    await s.done.catch((e: grpc.ServiceError) => expect(e.code).toBe(grpc.status.UNAVAILABLE));
    const late = acks.filter((a) => Number(a.sequence) > 1000);
    expect(late).toHaveLength(5);
    expect(late.every((a) => a.status === 'DROPPED' && /^stream_ending: the call is ending/.test(a.reason))).toBe(true);
    // Every frame read has its one final ack: decoded, or dropped because the call ended first.
    expect(acks).toHaveLength(burst + 5);
    const dropped = acks.filter((a) => a.status === 'DROPPED');
    expect(dropped.every((a) => /^stream_ending: /.test(a.reason))).toBe(true);
    expect(await metric(server, 'cortexcast_frames_dropped_total', { reason: 'stream_ending' })).toBe(dropped.length);
    conn.close();
    await server.close();
  }, 30_000);
});

describe('tokens kept off the command line', () => {
  it('serve reads its tokens from a file and the environment; they do not show in the process list', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cc-tok-'));
    writeFileSync(join(dir, 'token'), `${token}\n`, { mode: 0o600 });
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ models: [{ name: 'ridge', path: bundleDir }], grpcPort: 0, httpPort: 0, shutdownGraceMs: 1000 }));
    const env = { ...process.env, CORTEXCAST_ADMIN_TOKEN: adminToken, CORTEXCAST_TOKEN: '' };
    const child = spawn(process.execPath, [join(repoRoot, 'bin/cortexcast.js'), 'serve', '--config', join(dir, 'c.json'), '--token-file', join(dir, 'token')], { stdio: ['ignore', 'ignore', 'pipe'], env });
    let log = '';
    child.stderr.on('data', (b: Buffer) => (log += b.toString()));
    const exited = new Promise((r) => child.on('exit', r));
    try {
      await until(() => log.includes('"serving"'), 30_000);
      const port = Number(/"grpc":"[^"]*:(\d+)"/.exec(log)?.[1]);
      if (existsSync(`/proc/${child.pid}/cmdline`)) {
        const cmdline = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8');
        expect(cmdline).toContain('--token-file');
        expect(cmdline).not.toContain(token);
        expect(cmdline).not.toContain(adminToken);
      } else console.warn('SKIPPED the process-list check: no /proc on this system');
      const none = new DecoderConnection(`127.0.0.1:${port}`);
      await expect(none.listModels()).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
      const rig = new DecoderConnection(`127.0.0.1:${port}`, { token });
      expect((await rig.listModels()).models[0].name).toBe('ridge');
      await expect(rig.reloadModels()).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED });
      const admin = new DecoderConnection(`127.0.0.1:${port}`, { token: adminToken });
      expect((await admin.reloadModels()).models[0].name).toBe('ridge');
      for (const c of [none, rig, admin]) c.close();
    } finally {
      child.kill('SIGTERM');
      await Promise.race([exited, sleep(5000)]);
    }
  }, 60_000);

  it('token files: the first line; a token given two ways or an empty file is a clear error', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cc-tokf-'));
    writeFileSync(join(dir, 't'), `  ${token}  \nsecond line\n`);
    writeFileSync(join(dir, 'empty'), '\n');
    expect(config({ auth: { tokenFile: join(dir, 't') } }).auth.token).toBe(token);
    expect(loadServerConfig({ env: { CORTEXCAST_ADMIN_TOKEN: adminToken }, flags: { models: [{ path: bundleDir }] } }).auth.adminToken).toBe(adminToken);
    expect(() => config({ auth: { token, tokenFile: join(dir, 't') } })).toThrow(/CC_ERR_CONFIG: invalid configuration: auth.tokenFile: auth.token is also given/);
    expect(() => config({ auth: { tokenFile: join(dir, 'empty') } })).toThrow(/CC_ERR_OPTION: invalid option: auth.tokenFile: .* is empty/);
    expect(() => config({ auth: { tokenFile: join(dir, 'missing') } })).toThrow(/CC_ERR_OPTION: invalid option: auth.tokenFile: cannot read/);
    expect(() => config({ auth: { token, adminToken: token } })).toThrow(/auth.adminToken: must differ from auth.token/);
    expect(() => config({ limits: { maxConnections: 8, reservedConnections: 8 } })).toThrow(/reservedConnections \(8\) must be below limits.maxConnections/);
    // The clients' --token-file / --token / CORTEXCAST_TOKEN (replay, record).
    expect(clientToken({ tokenFile: join(dir, 't') }, {})).toBe(token);
    expect(clientToken({}, { CORTEXCAST_TOKEN: 'from-env' })).toBe('from-env');
    expect(clientToken({ token: 'flag' }, { CORTEXCAST_TOKEN: 'from-env' })).toBe('flag');
    expect(() => clientToken({ token: 'flag', tokenFile: join(dir, 't') }, {})).toThrow(/CC_ERR_OPTION: invalid option: --token and --token-file are both given/);
  });
});
