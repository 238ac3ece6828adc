import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { mkdtempSync, cpSync, writeFileSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecoderConnection, subscribe, type FrameAck, type FrameMessage } from '../../clients/lib/index.js';
import { loadServerConfig, type ServerConfigInput } from '../../src/server/config.js';
import { CortexcastServer } from '../../src/server/server.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { decodeRows } from '../../src/training/eval/evaluate.js';
import { loadBundle } from '../../src/models/bundle.js';
import { createSession } from '../../src/models/ort.js';
import { SensoriumDataset } from '../../src/datasets/sensorium.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

let data: string;
let bundleDir: string;
let neurons: number;

beforeAll(async () => {
  data = await tinyDataset({}, 200);
  bundleDir = join(mkdtempSync(join(tmpdir(), 'cc-srv-')), 'ridge');
  await trainRidge({ data, out: bundleDir, quiet: true, log: () => undefined });
  neurons = 200;
}, 120_000);

const quiet = (): void => undefined;

async function startServer(extra: Partial<ServerConfigInput> = {}): Promise<CortexcastServer> {
  const cfg = loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'ridge', path: bundleDir }], shutdownGraceMs: 2000, ...extra } });
  return new CortexcastServer(cfg, quiet).start();
}

const frame = (seed: number): Float32Array => Float32Array.from({ length: neurons }, (_, i) => ((i * 7 + seed * 13) % 11) / 5);

async function nextFrame(it: AsyncIterator<FrameMessage>, timeoutMs = 5000): Promise<FrameMessage> {
  const r = await Promise.race([it.next(), new Promise<never>((_, rej) => setTimeout(() => rej(new Error('no frame in time')), timeoutMs))]);
  if (r.done) throw new Error('subscription ended');
  return r.value;
}

describe('streaming server', () => {
  let server: CortexcastServer;
  let conn: DecoderConnection;
  let http: string;
  beforeAll(async () => {
    server = await startServer();
    conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    http = `http://127.0.0.1:${server.httpPort}`;
  });
  afterAll(async () => {
    conn.close();
    await server.close();
  });

  it('binds to loopback by default', () => {
    expect(server.cfg.host).toBe('127.0.0.1');
  });

  it('decodes streamed frames and fans them out; output equals offline eval for the same frame', async () => {
    const sub = subscribe(http, { stream: 'rig-1', model: 'ridge', float: true });
    const hello = await sub.hello;
    expect(hello.models[0]).toMatchObject({ name: 'ridge', neurons, width: 64, height: 36, provider: 'cpu' });
    const it = sub[Symbol.asyncIterator]();
    const acks: FrameAck[] = [];
    const s = conn.openStream((a) => acks.push(a));
    const ds = SensoriumDataset.open(data);
    const raw = ds.trial(ds.indices('test')[0]).responses;
    s.send({ streamId: 'rig-1', model: 'ridge', sequence: 1, responses: raw, imageId: 42 });
    const f = await nextFrame(it);
    expect(f).toMatchObject({ type: 'frame', stream: 'rig-1', model: 'ridge', seq: 1, imageId: 42, width: 64, height: 36 });
    expect(f.pixels).toHaveLength(36 * 64);
    expect(f.t.ingested).toBeLessThanOrEqual(f.t.decodeStart);
    expect(f.t.decodeStart).toBeLessThanOrEqual(f.t.decodeEnd);
    expect(f.t.decodeEnd).toBeLessThanOrEqual(f.t.sent);
    // The same frame through the offline path (evaluate.ts) gives the same numbers.
    const b = loadBundle(bundleDir);
    const offline = await decodeRows((await createSession(b.model)).session, b, raw, 1);
    let diff = 0;
    for (let i = 0; i < offline.length; i++) diff = Math.max(diff, Math.abs(offline[i] - f.values![i]));
    expect(diff).toBeLessThan(1e-6);
    s.end();
    await s.done;
    expect(acks.find((a) => a.sequence === 1)).toMatchObject({ status: 'DECODED', provider: 'cpu' });
    sub.close();
  });

  it('rejects bad frames with precise reasons and keeps the stream (and others) working', async () => {
    const acks: FrameAck[] = [];
    const s = conn.openStream((a) => acks.push(a));
    const sub = subscribe(http, { stream: 'rig-2' });
    await sub.hello;
    const it = sub[Symbol.asyncIterator]();
    s.send({ streamId: 'rig-2', model: 'ridge', sequence: 1, responses: new Float32Array(neurons - 3) });
    const nan = frame(1);
    nan[17] = NaN;
    nan[30] = Infinity;
    s.send({ streamId: 'rig-2', model: 'ridge', sequence: 2, responses: nan });
    s.send({ streamId: 'rig-2', model: 'nope', sequence: 3, responses: frame(2) });
    s.send({ streamId: 'has space', model: 'ridge', sequence: 4, responses: frame(2) });
    s.send({ streamId: 'rig-2', model: 'ridge', sequence: 5, responses: frame(3), unitIds: [1, 2, 3] });
    s.send({ streamId: 'rig-2', model: 'ridge', sequence: 6, responses: frame(4) });
    const f = await nextFrame(it);
    expect(f.seq).toBe(6);
    s.end();
    await s.done;
    const bySeq = new Map(acks.map((a) => [a.sequence, a]));
    expect(bySeq.get(1)).toMatchObject({ status: 'REJECTED', reason: `CC_ERR_NEURON_COUNT: frame has ${neurons - 3} neurons, model ridge expects ${neurons}` });
    expect(bySeq.get(2)).toMatchObject({ status: 'REJECTED', reason: 'CC_ERR_NOT_FINITE: frame has 2 non-finite values (NaN or Inf), first at neuron 17' });
    expect(bySeq.get(3)?.reason).toMatch(/CC_ERR_UNKNOWN_MODEL: unknown model 'nope' \(available: ridge\)/);
    expect(bySeq.get(4)?.reason).toBe("CC_ERR_STREAM_ID: stream_id 'has space': must be 1-128 printable ASCII characters without spaces");
    expect(bySeq.get(5)?.reason).toMatch(/^CC_ERR_UNIT_IDS: unit_ids differ/);
    expect(bySeq.get(6)?.status).toBe('DECODED');
    const metrics = await (await fetch(`${http}/metrics`)).text();
    expect(metrics).toMatch(/cortexcast_frames_rejected_total\{reason="neuron_count"\} 1/);
    expect(metrics).toMatch(/cortexcast_frames_rejected_total\{reason="not_finite"\} 1/);
    sub.close();
  });

  it('a message over limits.maxMessageBytes is rejected alone; one over the transport limit ends the stream RESOURCE_EXHAUSTED; the server keeps serving', async () => {
    const acks: FrameAck[] = [];
    const s = conn.openStream((a) => acks.push(a));
    s.send({ streamId: 'big', model: 'ridge', sequence: 1, responses: new Float32Array(400_000) });
    s.end();
    await s.done;
    expect(acks).toMatchObject([{ sequence: 1, status: 'REJECTED', reason: expect.stringMatching(/^CC_ERR_MESSAGE_TOO_LARGE: message of \d+ bytes is over limits.maxMessageBytes/) }]);
    const huge = conn.openStream();
    huge.send({ streamId: 'huge', model: 'ridge', sequence: 1, responses: new Float32Array(1_000_000) });
    await expect(huge.done).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringMatching(/transport limit/) });
    await expect(conn.decode('ridge', new Float32Array(400_000))).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringMatching(/^CC_ERR_MESSAGE_TOO_LARGE/) });
    const r = await conn.decode('ridge', frame(5));
    expect(r.pixels).toHaveLength(36 * 64);
  });

  it('unary Decode, ListModels and GetModel; unknown model is NOT_FOUND, bad size INVALID_ARGUMENT', async () => {
    const r = await conn.decode('ridge', frame(6));
    expect(r).toMatchObject({ width: 64, height: 36, provider: 'cpu' });
    expect(r.values).toHaveLength(2304);
    const list = await conn.listModels();
    expect(list.models.map((m) => m.name)).toEqual(['ridge']);
    expect((await conn.getModel('ridge')).metrics['validation.ssim']).toBeGreaterThan(0);
    await expect(conn.getModel('x')).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    await expect(conn.decode('x', frame(1))).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    await expect(conn.decode('ridge', new Float32Array(3))).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
  });

  it('latest-wins: a burst is decoded newest-first, superseded frames are dropped and counted', async () => {
    const acks: FrameAck[] = [];
    const s = conn.openStream((a) => acks.push(a));
    for (let i = 1; i <= 200; i++) s.send({ streamId: 'burst', model: 'ridge', sequence: i, responses: frame(i) });
    s.end();
    await s.done;
    const final = acks.find((a) => a.sequence === 200);
    expect(final?.status).toBe('DECODED');
    const dropped = acks.filter((a) => a.status === 'DROPPED');
    expect(dropped.length).toBeGreaterThan(0);
    expect(dropped[0].reason).toMatch(/superseded by frame/);
    const metrics = await (await fetch(`${http}/metrics`)).text();
    expect(metrics).toMatch(/cortexcast_frames_dropped_total\{model="ridge",reason="superseded"\} [1-9]/);
  });

  it('a slow subscriber skips frames while a fast one gets every frame; a vanished one is cleaned up', async () => {
    const fast = subscribe(http, { stream: 'fanout' });
    await fast.hello;
    const slow = subscribe(http, { stream: 'fanout', float: true });
    await slow.hello;
    const before = server.fanout.size;
    // Stop reading on the slow socket: its buffer fills and the server skips it.
    slow.socket.pause();
    const s = conn.openStream();
    const it = fast[Symbol.asyncIterator]();
    const skips = async (): Promise<number> => (await server.metrics.subscriberSkips.get()).values.reduce((n, v) => n + v.value, 0);
    const skipsBefore = await skips();
    let sent = 0;
    // Kernel socket buffers absorb a few MB before the server sees backpressure: keep going until it does.
    while (sent < 2000 && (sent % 50 !== 0 || (await skips()) === skipsBefore)) {
      sent++;
      s.send({ streamId: 'fanout', model: 'ridge', sequence: sent, responses: frame(sent) });
      // One frame at a time so latest-wins drops none: every decoded frame must reach the fast client.
      const f = await nextFrame(it);
      expect(f.seq).toBe(sent);
    }
    expect(await skips()).toBeGreaterThan(skipsBefore);
    s.end();
    await s.done;
    slow.socket.terminate();
    fast.close();
    await new Promise((r) => setTimeout(r, 200));
    expect(server.fanout.size).toBe(before - 2);
  });

  it('inference threads run at decodeNice above the server (Linux); by default at its own priority', async (ctx) => {
    if (process.platform !== 'linux') return ctx.skip();
    const niceOf = (tid: string): number => Number(readFileSync(`/proc/self/task/${tid}/stat`, 'utf8').split(')').pop()!.trim().split(' ')[16]);
    const tids = (): string[] => readdirSync('/proc/self/task');
    const base = niceOf(String(process.pid));
    expect(server.registry.get('ridge').pool.nice).toEqual({ applied: base });
    // Clamped at 19, a lowered thread could not be told from an inherited one.
    if (base + 10 > 19) return ctx.skip();
    const before = new Set(tids());
    const lowered = await startServer({ decodeNice: 10, threads: 2 });
    try {
      const added = tids().filter((t) => !before.has(t));
      const want = base + 10;
      expect(lowered.registry.get('ridge').pool.nice).toEqual({ applied: want });
      // The worker thread and the intra-op thread ORT started from it; the process's own threads keep theirs.
      expect(added.filter((t) => niceOf(t) === want).length).toBeGreaterThanOrEqual(2);
      expect(niceOf(String(process.pid))).toBe(base);
    } finally {
      await lowered.close();
    }
  });

  it('exposes Prometheus metrics with conventional names and health', async () => {
    const text = await (await fetch(`${http}/metrics`)).text();
    for (const name of ['cortexcast_end_to_end_seconds_bucket', 'cortexcast_decode_seconds_bucket', 'cortexcast_queue_wait_seconds_bucket', 'cortexcast_send_seconds_bucket', 'cortexcast_frames_received_total', 'cortexcast_streams', 'cortexcast_worker_busy_ratio', 'process_cpu_seconds_total', 'cortexcast_model_info'])
      expect(text).toContain(name);
    const h = await (await fetch(`${http}/healthz`)).json();
    expect(h).toMatchObject({ serving: true, state: 'RUNNING' });
  });

  it('the whole exposition, Node process metrics included, passes promtool check metrics (Debian package prometheus)', async (ctx) => {
    const { spawnSync } = await import('node:child_process');
    if (spawnSync('promtool', ['--version'], { stdio: 'ignore' }).status !== 0) {
      console.warn('SKIPPED: promtool not installed (apt-get install prometheus) - metric lint not run');
      ctx.skip();
      return;
    }
    const text = await (await fetch(`${http}/metrics`)).text();
    const r = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect((r.stdout + r.stderr).trim()).toBe('');
    expect(r.status).toBe(0);
  });

  it('answers standard gRPC health checks and server reflection', async () => {
    const healthPkg = protoLoader.loadSync(join(process.cwd(), 'node_modules/grpc-health-check/proto/health/v1/health.proto'), { enums: String });
    const Health = (grpc.loadPackageDefinition(healthPkg) as unknown as { grpc: { health: { v1: { Health: new (a: string, c: grpc.ChannelCredentials) => grpc.Client & Record<string, Function> } } } }).grpc.health.v1.Health;
    const hc = new Health(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure());
    const res = await new Promise<{ status: string }>((resolve, reject) => hc.check({ service: 'cortexcast.v1.Decoder' }, (e: Error | null, r: { status: string }) => (e ? reject(e) : resolve(r))));
    expect(res.status).toBe('SERVING');
    hc.close();
    const reflPkg = protoLoader.loadSync(join(process.cwd(), 'node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto'));
    const Refl = (grpc.loadPackageDefinition(reflPkg) as unknown as { grpc: { reflection: { v1: { ServerReflection: new (a: string, c: grpc.ChannelCredentials) => grpc.Client & Record<string, Function> } } } }).grpc.reflection.v1.ServerReflection;
    const rc = new Refl(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure());
    const call = rc.serverReflectionInfo();
    const services = await new Promise<string[]>((resolve, reject) => {
      call.on('data', (r: { listServicesResponse?: { service: { name: string }[] } }) => resolve((r.listServicesResponse?.service ?? []).map((s) => s.name)));
      call.on('error', reject);
      call.write({ listServices: '' });
    });
    call.end();
    rc.close();
    expect(services).toContain('cortexcast.v1.Decoder');
  });

  it('reloads models under traffic without dropping the stream', async () => {
    const acks: FrameAck[] = [];
    const s = conn.openStream((a) => acks.push(a));
    let seq = 0;
    const timer = setInterval(() => s.send({ streamId: 'reload', model: 'ridge', sequence: ++seq, responses: frame(seq) }), 5);
    await new Promise((r) => setTimeout(r, 100));
    const reply = await conn.reloadModels();
    expect(reply.models[0].name).toBe('ridge');
    await new Promise((r) => setTimeout(r, 150));
    clearInterval(timer);
    s.end();
    await s.done;
    const decodedAfter = acks.filter((a) => a.status === 'DECODED' && a.sequence > seq / 2);
    expect(decodedAfter.length).toBeGreaterThan(0);
    expect(acks.filter((a) => a.status === 'REJECTED')).toHaveLength(0);
  });
});

describe('server security, limits and lifecycle', () => {
  it('requires the token on gRPC and WebSocket when configured', async () => {
    const token = 'a-very-long-shared-token';
    const server = await startServer({ auth: { token } });
    const http = `http://127.0.0.1:${server.httpPort}`;
    const bad = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    await expect(bad.listModels()).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    const s = bad.openStream();
    await expect(s.done).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    const good = new DecoderConnection(`127.0.0.1:${server.grpcPort}`, { token });
    expect((await good.listModels()).models).toHaveLength(1);
    await expect(subscribe(http).hello).rejects.toThrow();
    await expect(subscribe(http, { token }).hello).resolves.toMatchObject({ type: 'hello' });
    bad.close();
    good.close();
    await server.close();
  });

  it('limits subscribers and streams', async () => {
    const server = await startServer({ limits: { maxSubscribers: 1, maxStreams: 1 } });
    const http = `http://127.0.0.1:${server.httpPort}`;
    const a = subscribe(http);
    await a.hello;
    await expect(subscribe(http).hello).rejects.toThrow(/1013 subscriber limit reached \(1\)/);
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const s1 = conn.openStream();
    s1.send({ streamId: 'one', model: 'ridge', sequence: 1, responses: frame(1) });
    await new Promise((r) => setTimeout(r, 100));
    const s2 = conn.openStream();
    await expect(s2.done).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringMatching(/stream limit reached \(1\)/) });
    s1.end();
    await s1.done;
    a.close();
    conn.close();
    await server.close();
  });

  it('shuts down gracefully with streams open: in-flight work drains, streams end UNAVAILABLE, close() twice is safe', async () => {
    const server = await startServer();
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const acks: FrameAck[] = [];
    const s = conn.openStream((a) => acks.push(a));
    s.send({ streamId: 'bye', model: 'ridge', sequence: 1, responses: frame(1) });
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    const closing = server.close();
    expect(server.close()).toBe(closing);
    await closing;
    expect(Date.now() - t0).toBeLessThan(server.cfg.shutdownGraceMs + 2000);
    await expect(s.done).rejects.toMatchObject({ code: expect.any(Number) });
    expect(acks.find((a) => a.sequence === 1)?.status).toBe('DECODED');
    expect(server.state).toBe('CLOSED');
    conn.close();
  });

  it('validates configuration once, reporting every problem', () => {
    expect(() => loadServerConfig({ flags: { models: [], grpcPort: 70000, auth: { token: 'short' } } })).toThrow(
      /CC_ERR_CONFIG: invalid configuration: grpcPort: .*; models: at least one model .*; auth.token: auth tokens must be at least 16 characters/,
    );
    const dir = mkdtempSync(join(tmpdir(), 'cc-cfg-'));
    writeFileSync(join(dir, 'c.json'), JSON.stringify({ models: [{ path: bundleDir }], httpPort: 9999 }));
    const cfg = loadServerConfig({ file: join(dir, 'c.json'), env: { CORTEXCAST_HTTP_PORT: '9000' }, flags: { grpcPort: 1234 } });
    expect(cfg).toMatchObject({ host: '127.0.0.1', httpPort: 9000, grpcPort: 1234, framePolicy: 'latest' });
    expect(Object.isFrozen(cfg.limits)).toBe(true);
    expect(() => loadServerConfig({ flags: { models: [{ path: bundleDir }, { path: bundleDir }] } })).toThrow(/name 'ridge' is used twice/);
    expect(() => loadServerConfig({ flags: { models: [{ path: bundleDir }], decodeNice: 20 } })).toThrow(/decodeNice: .*19/);
    expect(() => loadServerConfig({ env: { CORTEXCAST_DECODE_NICE: 'low' }, flags: { models: [{ path: bundleDir }] } })).toThrow(/decodeNice/);
    expect(loadServerConfig({ env: { CORTEXCAST_DECODE_NICE: '5' }, flags: { models: [{ path: bundleDir }] } }).decodeNice).toBe(5);
  });

  it('a broken bundle fails startup with its path named; reload with a broken bundle keeps the old models', async () => {
    const broken = join(mkdtempSync(join(tmpdir(), 'cc-broken-')), 'b');
    cpSync(bundleDir, broken, { recursive: true });
    writeFileSync(join(broken, 'model.onnx'), 'junk');
    await expect(startServer({ models: [{ name: 'x', path: broken }] })).rejects.toThrow(/CC_ERR_BUNDLE: bundle .*b: model\.onnx does not match/);
    const good = join(mkdtempSync(join(tmpdir(), 'cc-good-')), 'b');
    cpSync(bundleDir, good, { recursive: true });
    const server = await startServer({ models: [{ name: 'r', path: good }] });
    const manifest = readFileSync(join(good, 'manifest.json'));
    writeFileSync(join(good, 'manifest.json'), '{');
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    await expect(conn.reloadModels()).rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION });
    expect((await conn.decode('r', frame(1))).pixels).toHaveLength(2304);
    writeFileSync(join(good, 'manifest.json'), manifest);
    conn.close();
    await server.close();
  });
});
