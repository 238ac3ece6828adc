/**
 * `npm run bench:soak`: a long mixed-load run against the real server (a separate process) that looks
 * for what short tests miss: lost acknowledgements, leaks, crashes on odd input, slow shutdown.
 *
 * For --minutes, all at once:
 *   - --streams rigs, each on its own connection, 30 Hz, sequences 1, 2, 3, ... with send()/drained()
 *     backpressure, acks read;
 *   - one rig whose client stops reading acks for --pause-s at a time;
 *   - unary Decode calls (--decode-hz), ReloadModels every --reload-every s;
 *   - one WebSocket subscriber that never reads (paused socket) and one that counts frames;
 *   - connection churn through a local TCP proxy: open, send a few frames, then end normally, cancel,
 *     or cut the TCP connection (RST);
 *   - every --bad-every s a batch of bad input: wrong neuron count, NaN, unknown model, bad stream id,
 *     a 4 MB message, garbage bytes on the gRPC port, HTTP and WebSocket-upgrade requests for
 *     `//x:99999`.
 * At the end every stream is ended and its `done` awaited; it prints the ack ledger, unary / reload
 * outcomes, rejections by reason, server RSS / heap (start after warm-up, peak, end), open handles,
 * and how long the server took to exit on SIGTERM.
 *
 * Exit status 1 when a frame has no final ack (unaccounted) on a stream the client ended normally or
 * the server ended on its own (streams the client cancelled or cut do not count), when the server
 * process died, or when its RSS grew by more than --max-rss-growth-mb. Exit status 2: the bench broke.
 *
 *   npm run bench:soak -- [--minutes 10] [--streams 8] [--reload-every 5] [--decode-hz 4]
 *     [--bad-every 15] [--pause-s 4] [--max-rss-growth-mb 100] [--grace-ms 5000]
 *     [--skip garbage,http-target,ws-target,oversize]
 */
import * as grpc from '@grpc/grpc-js';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { setMaxListeners } from 'node:events';
import { createInterface } from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { DecoderConnection, subscribe, type FrameAck, type FrameStream, type OutgoingFrame } from '../clients/lib/index.js';

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const minutes = Number(arg('minutes', '10'));
const nStreams = Number(arg('streams', '8'));
const reloadEveryS = Number(arg('reload-every', '5'));
const decodeHz = Number(arg('decode-hz', '4'));
const badEveryS = Number(arg('bad-every', '15'));
const pauseS = Number(arg('pause-s', '4'));
const maxRssGrowthMb = Number(arg('max-rss-growth-mb', '100'));
const graceMs = Number(arg('grace-ms', '5000'));
// Lets a soak go on past a known crash (e.g. `--skip ws-target` while that bug is open).
const skip = new Set(arg('skip', '').split(',').filter(Boolean));
const HZ = 30;
const WARMUP_MS = 10_000;
const SAMPLE_MS = 5_000;
const PROGRESS_MS = 30_000;
const MODEL = 'ridge';
const repo = fileURLToPath(new URL('..', import.meta.url));
const cache = join(repo, '.cache', 'soak');
const now = (): number => performance.now();

// ---------------------------------------------------------------------------------------------
// Stopping: one AbortSignal ends every sleep and backpressure wait at once (time up or server died).

const ac = new AbortController();
// Every concurrent sleep holds one listener until it fires; a few dozen at once is normal here.
setMaxListeners(0, ac.signal);
const aborted = new Promise<void>((r) => ac.signal.addEventListener('abort', () => r(), { once: true }));
const stopping = (): boolean => ac.signal.aborted;
// timers/promises removes its abort listener when the timer fires, so millions of sleeps do not pile up listeners.
const sleep = (ms: number): Promise<void> => delay(ms, undefined, { signal: ac.signal }).catch(() => undefined);

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  const t = new AbortController();
  try {
    // The timer's AbortError after the race is settled is expected, not an unhandled rejection.
    return await Promise.race([p, delay(ms, 'timeout' as const, { signal: t.signal }).catch(() => 'timeout' as const)]);
  } finally {
    t.abort();
  }
}

/** The first details seen for each gRPC status name, so a report says why, not just what. */
const firstDetails = new Map<string, string>();
const codeName = (e: unknown): string => {
  const c = (e as { code?: unknown }).code;
  const name = typeof c === 'number' ? (grpc.status[c] ?? `code ${c}`) : (e as Error).message?.slice(0, 60) || 'unknown';
  const details = (e as { details?: unknown }).details;
  if (!firstDetails.has(name) && typeof details === 'string') firstDetails.set(name, details.slice(0, 160));
  return name;
};
const bump = <K>(m: Map<K, number>, k: K, by = 1): void => void m.set(k, (m.get(k) ?? 0) + by);
const fmtMap = <K>(m: Map<K, number>): string => (m.size ? [...m].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ') : 'none');

// ---------------------------------------------------------------------------------------------
// Data and bundle, made once through the CLI (the same path a user takes) and cached.

function cli(args: string[]): void {
  const r = spawnSync(process.execPath, ['bin/cortexcast.js', ...args], { cwd: repo, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) throw new Error(`cortexcast ${args.join(' ')} exited ${r.status}`);
}

function prepare(): string {
  const data = join(cache, 'data');
  const bundle = join(cache, 'ridge');
  // synth writes many files; a marker written after it returns tells a finished dataset from an interrupted one.
  const dataOk = join(cache, 'data.ok');
  mkdirSync(cache, { recursive: true });
  if (!existsSync(dataOk)) {
    console.log(`preparing ${data} (synth --tiny)`);
    cli(['synth', '--tiny', '--out', data, '--force']);
    writeFileSync(dataOk, new Date().toISOString() + '\n');
  }
  // train writes manifest.json last, so its presence means a complete bundle.
  if (!existsSync(join(bundle, 'manifest.json'))) {
    console.log(`preparing ${bundle} (train ridge)`);
    cli(['train', 'ridge', '--data', data, '--out', bundle]);
  }
  return bundle;
}

// ---------------------------------------------------------------------------------------------
// The server under test.

interface Server {
  child: ChildProcess;
  grpcPort: number;
  httpPort: number;
  http: string;
  /** Set when the process exits; `expected` only once we sent SIGTERM. */
  exit?: { code: number | null; signal: NodeJS.Signals | null; atMs: number; expected: boolean };
  stderrTail: string[];
  logLevels: Map<string, number>;
  /** error / warn log lines by message (+ error text), to name what went wrong inside. */
  problems: Map<string, number>;
  stopRequested: boolean;
}

function startServer(bundle: string): Promise<Server> {
  const cfg = join(cache, 'server.json');
  writeFileSync(cfg, JSON.stringify({ shutdownGraceMs: graceMs }, null, 2) + '\n');
  const child = spawn(process.execPath, ['bin/cortexcast.js', 'serve', '--config', cfg, '--model', `${MODEL}=${bundle}`, '--grpc-port', '0', '--http-port', '0'], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
  const srv: Server = { child, grpcPort: 0, httpPort: 0, http: '', stderrTail: [], logLevels: new Map(), problems: new Map(), stopRequested: false };
  return new Promise((resolve, reject) => {
    // Always drain both pipes: a full stderr pipe would block the server and look like a hang.
    child.stdout!.resume();
    createInterface({ input: child.stderr! }).on('line', (l) => {
      srv.stderrTail.push(l);
      if (srv.stderrTail.length > 40) srv.stderrTail.shift();
      let j: { level?: string; msg?: string; grpc?: string; http?: string; error?: unknown } | undefined;
      try {
        j = l.startsWith('{') ? (JSON.parse(l) as typeof j) : undefined;
      } catch {
        j = undefined;
      }
      bump(srv.logLevels, j?.level ?? 'non-JSON');
      if (j && (j.level === 'error' || j.level === 'warn')) bump(srv.problems, `${j.level} '${j.msg}'${j.error !== undefined ? `: ${String(typeof j.error === 'string' ? j.error : JSON.stringify(j.error)).slice(0, 160)}` : ''}`);
      if (j?.msg === 'serving' && j.grpc && j.http) {
        srv.grpcPort = Number(j.grpc.split(':').pop());
        srv.httpPort = Number(new URL(j.http).port);
        srv.http = `http://127.0.0.1:${srv.httpPort}`;
        resolve(srv);
      }
    });
    child.on('exit', (code, signal) => {
      srv.exit = { code, signal, atMs: now(), expected: srv.stopRequested };
      if (!srv.stopRequested) ac.abort();
      reject(new Error(`server exited ${code ?? signal} before serving:\n${srv.stderrTail.join('\n')}`));
    });
  });
}

const alive = (s: Server): boolean => !s.exit;

/** Prometheus text -> series (`name{labels}`) -> value. */
async function scrape(http: string): Promise<Map<string, number> | undefined> {
  try {
    const r = await withTimeout(fetch(`${http}/metrics`, { signal: AbortSignal.timeout(5000) }).then((x) => x.text()), 6000);
    if (r === 'timeout') return undefined;
    const m = new Map<string, number>();
    for (const line of r.split('\n')) {
      if (!line || line.startsWith('#')) continue;
      const sp = line.lastIndexOf(' ');
      m.set(line.slice(0, sp), Number(line.slice(sp + 1)));
    }
    return m;
  } catch {
    return undefined;
  }
}
const series = (m: Map<string, number> | undefined, name: string): number => {
  if (!m) return NaN;
  let sum = 0;
  let found = false;
  for (const [k, v] of m)
    if (k === name || k.startsWith(`${name}{`)) {
      sum += v;
      found = true;
    }
  return found ? sum : NaN;
};
const byLabel = (m: Map<string, number> | undefined, name: string, label: string): Map<string, number> => {
  const out = new Map<string, number>();
  const re = new RegExp(`${label}="([^"]*)"`);
  for (const [k, v] of m ?? []) if (k.startsWith(`${name}{`)) bump(out, re.exec(k)?.[1] ?? '?', v);
  return out;
};
const MB = 2 ** 20;

// ---------------------------------------------------------------------------------------------
// Ack ledger. A frame is "settled" by its final ack (DECODED / DROPPED / REJECTED). Streams the client
// cancelled or cut count nothing: their missing acks are the client's doing.

type Status = FrameAck['status'];
const acks = new Map<Status, number>();
const ledger = {
  sent: 0,
  /** Frames of streams the client ended normally (or the server ended on its own) without a final ack. */
  unaccounted: 0,
  unaccountedByKind: new Map<string, number>(),
  /** Final acks on the accounted streams, by status. */
  finals: new Map<Status, number>(),
  /** Final acks for a sequence not outstanding (duplicate or never sent). */
  unexpected: 0,
  /** `done` of accounted streams, by final status. */
  doneStatus: new Map<string, number>(),
  /** Accounted streams whose `done` did not settle in time. */
  doneTimeouts: 0,
  /** Regular streams the server ended before the client did (a healthy rig should never see this). */
  serverEnded: new Map<string, number>(),
};

/** The private grpc call behind a FrameStream: pause/resume for the slow reader, 'end' for the last acks. */
type RawCall = { pause(): void; resume(): void; readableEnded: boolean; once(ev: 'end', cb: () => void): void };
const rawCall = (s: FrameStream): RawCall => (s as unknown as { call: RawCall }).call;

class Tracked {
  readonly stream: FrameStream;
  readonly pending = new Set<number>();
  readonly finals = new Map<Status, number>();
  seq = 0;
  sent = 0;
  /** Every ack delivered to the client so far (the slow reader measures its backlog with it). */
  received = 0;
  /** Set once done settles, whoever ended the call. */
  outcome?: string;

  constructor(
    conn: DecoderConnection,
    readonly kind: string,
    readonly id: string,
  ) {
    this.stream = conn.openStream((a) => this.onAck(a));
    this.stream.done.then(
      () => (this.outcome = 'OK'),
      (e: unknown) => (this.outcome = codeName(e)),
    );
  }

  private onAck(a: FrameAck): void {
    bump(acks, a.status);
    this.received++;
    if (a.status === 'ACCEPTED') return;
    bump(this.finals, a.status);
    // Sequence may be a BigInt in the library; ours stay far below 2^53, so Number() is exact.
    if (!this.pending.delete(Number(a.sequence))) ledger.unexpected++;
  }

  /** Hand the next frame (sequence seq+1) to send(); returns send()'s backpressure answer. */
  send(f: Omit<OutgoingFrame, 'sequence' | 'streamId'> & { streamId?: string }, count = true): boolean {
    const sequence = ++this.seq;
    this.pending.add(sequence);
    this.sent++;
    if (count) ledger.sent++;
    return this.stream.send({ streamId: this.id, ...f, sequence });
  }

  /** Wait until send() may be called again, or until there is no point (stopping, call ended). */
  async drained(): Promise<void> {
    await Promise.race([this.stream.drained(), aborted, this.stream.done.catch(() => undefined)]);
  }

  /** end() and await done (and the acks still buffered behind it); adds the stream to the ledger. */
  async endAndAccount(timeoutMs = 30_000): Promise<void> {
    const call = rawCall(this.stream);
    call.resume();
    this.stream.end();
    await this.settleAndAccount(timeoutMs);
  }

  async settleAndAccount(timeoutMs: number): Promise<void> {
    const call = rawCall(this.stream);
    const r = await withTimeout(this.stream.done.then(() => 'OK', codeName), timeoutMs);
    // grpc-js emits 'status' as soon as the trailers arrive, possibly before buffered acks are
    // delivered as 'data'; 'end' comes after the last one.
    if (!call.readableEnded) await withTimeout(new Promise<void>((res) => call.once('end', res)), 2000);
    if (r === 'timeout') {
      ledger.doneTimeouts++;
      this.stream.cancel();
    } else bump(ledger.doneStatus, r);
    for (const [k, v] of this.finals) bump(ledger.finals, k, v);
    ledger.unaccounted += this.pending.size;
    if (this.pending.size) bump(ledger.unaccountedByKind, this.kind, this.pending.size);
  }
}

// ---------------------------------------------------------------------------------------------
// Load generators.

let neurons = 0;
let frame = new Float32Array(0);

/** A 30 Hz rig: sequences from 1, send()/drained() backpressure; a stream the server ends is replaced. */
async function rig(grpcAddr: string, k: number, slow: boolean, conns: DecoderConnection[]): Promise<void> {
  // The slow reader gets a small HTTP/2 receive window, so a few seconds of unread acks really do
  // push back on the server (with the default 64 KB window it would take minutes of acks).
  const conn = new DecoderConnection(grpcAddr, slow ? { channelOptions: { 'grpc-node.flow_control_window': 2048 } } : {});
  conns.push(conn);
  const period = 1000 / HZ;
  for (let gen = 0; !stopping(); gen++) {
    const t = new Tracked(conn, slow ? 'slow-reader' : 'rig', `${slow ? 'slow' : `rig-${k}`}${gen ? `.${gen}` : ''}`);
    const pauser = slow ? pauseLoop(t) : Promise.resolve();
    // Phases spread so rigs do not all send in the same tick.
    let next = now() + (k * period) / (nStreams + 1);
    while (!stopping() && t.outcome === undefined) {
      const wait = next - now();
      if (wait > 0) await sleep(wait);
      if (stopping() || t.outcome !== undefined) break;
      const ok = t.send({ model: MODEL, responses: frame });
      if (!ok) await t.drained();
      // After a stall, carry on from now rather than bursting to catch up (a rig cannot send the past).
      next = Math.max(next + period, now());
    }
    await pauser;
    if (t.outcome !== undefined) {
      bump(ledger.serverEnded, `${t.kind} ${t.outcome}`);
      await t.settleAndAccount(1000);
      await sleep(1000);
    } else await t.endAndAccount();
  }
}

const slowStats = { pauses: 0, pausedMs: 0, backlog: [] as number[] };
async function pauseLoop(t: Tracked): Promise<void> {
  const call = rawCall(t.stream);
  while (!stopping() && t.outcome === undefined) {
    await sleep(2000 + Math.random() * 4000);
    if (stopping() || t.outcome !== undefined) break;
    call.pause();
    slowStats.pauses++;
    const t0 = now();
    await sleep(pauseS * 1000);
    const before = t.received;
    call.resume();
    slowStats.pausedMs += now() - t0;
    // Acks that arrive in a burst right after resume were held back by the pause: proof it bit.
    await sleep(300);
    slowStats.backlog.push(t.received - before);
  }
}

const unary = { ok: 0, errors: new Map<string, number>() };
async function decodeLoop(conn: DecoderConnection): Promise<void> {
  while (!stopping()) {
    const t0 = now();
    const r = await withTimeout(conn.decode(MODEL, frame).then(() => 'OK', codeName), 10_000);
    if (r === 'OK') unary.ok++;
    else bump(unary.errors, r === 'timeout' ? 'TIMEOUT (10 s)' : r);
    await sleep(Math.max(0, 1000 / decodeHz - (now() - t0)));
  }
}

const reloads = { ok: 0, failed: new Map<string, number>() };
async function reloadLoop(conn: DecoderConnection): Promise<void> {
  while (!stopping()) {
    await sleep(reloadEveryS * 1000);
    if (stopping()) break;
    const r = await withTimeout(conn.reloadModels().then(() => 'OK', codeName), 30_000);
    if (r === 'OK') reloads.ok++;
    else bump(reloads.failed, r === 'timeout' ? 'TIMEOUT (30 s)' : r);
  }
}

/** A TCP relay to the gRPC port whose connections can be cut with an RST, as when a rig's machine dies. */
async function startProxy(target: number): Promise<{ port: number; cutAll(): void; close(): void }> {
  const pairs = new Set<[net.Socket, net.Socket]>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target, '127.0.0.1');
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    client.pipe(upstream).pipe(client);
    const drop = (): void => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    cutAll: () => {
      for (const [c, u] of pairs) {
        c.resetAndDestroy();
        u.resetAndDestroy();
      }
      pairs.clear();
    },
    close: () => {
      for (const [c, u] of pairs) (c.destroy(), u.destroy());
      server.close();
    },
  };
}

const churn = new Map<string, number>();
async function churnLoop(proxyPort: number, cutAll: () => void): Promise<void> {
  const modes = ['end', 'cancel', 'cut', 'close'] as const;
  for (let i = 0; !stopping(); i++) {
    const mode = modes[i % modes.length];
    const conn = new DecoderConnection(`127.0.0.1:${proxyPort}`);
    const t = new Tracked(conn, 'churn', `churn-${i}`);
    const frames = 1 + Math.floor(Math.random() * 8);
    // Churned frames count as sent only on streams that will be ended normally.
    for (let f = 0; f < frames && !stopping(); f++) {
      if (!t.send({ model: MODEL, responses: frame }, mode === 'end')) await t.drained();
      await sleep(1000 / HZ);
    }
    if (mode === 'end') await t.endAndAccount(10_000);
    else if (mode === 'cancel') t.stream.cancel();
    else if (mode === 'cut') {
      cutAll();
      await withTimeout(t.stream.done.catch(() => undefined), 5000);
    } else {
      // Closing the channel does not cancel its calls in grpc-js; cancel too, so the stream does not
      // outlive the bench and fill limits.maxStreams.
      conn.close();
      t.stream.cancel();
    }
    conn.close();
    bump(churn, mode);
    await sleep(50);
  }
}

/** First response line of a raw TCP exchange, or what happened instead. */
function raw(port: number, payload: Buffer | string, waitMs = 2000): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    let got = Buffer.alloc(0);
    let done = false;
    // HTTP/1 answers by its status line; an HTTP/2 peer answers in binary frames (SETTINGS, GOAWAY).
    const answer = (): string => {
      if (!got.length) return '';
      const text = got.toString('latin1');
      return text.startsWith('HTTP/') ? text.split('\r\n')[0] : `${got.length} bytes binary`;
    };
    const finish = (how: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      const a = answer();
      resolve(a ? (a.startsWith('HTTP/') ? a : `${a}, then ${how}`) : `${how} without response`);
    };
    const timer = setTimeout(() => finish('still open'), waitMs);
    s.on('connect', () => s.write(payload));
    s.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.toString('latin1').startsWith('HTTP/') && got.includes('\r\n')) finish('answered');
    });
    s.on('error', (e: NodeJS.ErrnoException) => finish(`error ${e.code ?? e.message}`));
    s.on('close', () => finish('closed'));
  });
}

const bad = {
  batches: 0,
  unary: new Map<string, number>(),
  oversizeStream: new Map<string, number>(),
  raw: new Map<string, number>(),
};
async function badBatch(srv: Server, i: number): Promise<void> {
  bad.batches++;
  const addr = `127.0.0.1:${srv.grpcPort}`;
  const conn = new DecoderConnection(addr);
  const nan = Float32Array.from(frame);
  nan[3] = NaN;
  nan[7] = Infinity;
  // Rejected frames still owe an ack each; this stream is ended normally and accounted like any rig.
  const t = new Tracked(conn, 'bad-input', `bad-${i}`);
  t.send({ model: MODEL, responses: new Float32Array(neurons + 1) });
  t.send({ model: MODEL, responses: new Float32Array(Math.max(1, neurons - 1)) });
  t.send({ model: MODEL, responses: nan });
  t.send({ model: 'no-such-model', responses: frame });
  t.send({ model: MODEL, streamId: 'has spaces in it', responses: frame });
  t.send({ model: MODEL, streamId: '', responses: frame });
  t.send({ model: MODEL, streamId: 'x'.repeat(200), responses: frame });
  t.send({ model: MODEL, responses: frame, unitIds: [1, 2, 3] });
  t.send({ model: MODEL, responses: frame, stimulus: { width: 300, height: 1, pixels: new Uint8Array(300) } });
  t.send({ model: MODEL, responses: frame });
  await t.endAndAccount(10_000);

  const badUnary: [string, string, Float32Array][] = [
    ['wrong count', MODEL, new Float32Array(neurons + 1)],
    ['NaN', MODEL, nan],
    ['unknown model', 'no-such-model', frame],
  ];
  if (!skip.has('oversize')) badUnary.push(['4 MB', MODEL, new Float32Array(2 ** 20)]);
  for (const [what, model, r] of badUnary) {
    const res = await withTimeout(conn.decode(model, r).then(() => 'OK', codeName), 10_000);
    bump(bad.unary, `${what}: ${res}`);
  }

  if (!skip.has('oversize')) {
    // Its own connection: the server may reset the stream or the whole session for this.
    const big = new DecoderConnection(addr);
    const o = new Tracked(big, 'oversize', `big-${i}`);
    o.send({ model: MODEL, responses: new Float32Array(2 ** 20) }, false);
    o.stream.end();
    const r = await withTimeout(o.stream.done.then(() => 'OK', codeName), 10_000);
    if (r === 'timeout') o.stream.cancel();
    bump(bad.oversizeStream, r === 'OK' ? `OK (acks ${o.sent - o.pending.size}/1)` : r);
    big.close();
  }
  conn.close();

  if (!skip.has('garbage')) {
    bump(bad.raw, `garbage -> gRPC: ${await raw(srv.grpcPort, randomBytes(64 * 1024), 1000)}`);
    // A valid HTTP/2 preface first, so the garbage reaches the frame parser rather than the preface check.
    bump(bad.raw, `preface+garbage -> gRPC: ${await raw(srv.grpcPort, Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), randomBytes(16 * 1024)]), 1000)}`);
  }
  if (!skip.has('http-target')) bump(bad.raw, `GET //x:99999 -> HTTP: ${await raw(srv.httpPort, 'GET //x:99999 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n')}`);
  if (!skip.has('ws-target'))
    bump(
      bad.raw,
      `WS upgrade //x:99999 -> HTTP: ${await raw(srv.httpPort, 'GET //x:99999 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')}`,
    );
}

async function badLoop(srv: Server): Promise<void> {
  await sleep(Math.min(badEveryS * 1000, WARMUP_MS + 2000));
  for (let i = 0; !stopping(); i++) {
    await badBatch(srv, i).catch((e: Error) => bump(bad.raw, `batch threw: ${e.message.slice(0, 80)}`));
    await sleep(badEveryS * 1000);
  }
}

// ---------------------------------------------------------------------------------------------

interface Mem {
  rss: number;
  heap: number;
  handles: number;
}
const mem = (m: Map<string, number> | undefined): Mem => ({
  rss: series(m, 'process_resident_memory_bytes') / MB,
  heap: series(m, 'nodejs_heap_size_used_bytes') / MB,
  handles: series(m, 'nodejs_active_handles'),
});

async function main(): Promise<void> {
  console.log(`bench:soak  ${minutes} min, ${nStreams} streams + 1 slow ack reader at ${HZ} Hz, decode ${decodeHz}/s, reload every ${reloadEveryS} s, bad input every ${badEveryS} s${skip.size ? ` (skipping ${[...skip].join(', ')})` : ''}, ${os.cpus().length} cores, Node ${process.version}`);
  const bundle = prepare();
  const srv = await startServer(bundle);
  const grpcAddr = `127.0.0.1:${srv.grpcPort}`;
  console.log(`server pid ${srv.child.pid}: gRPC ${grpcAddr}, HTTP ${srv.http}`);
  const control = new DecoderConnection(grpcAddr);
  const info = (await control.listModels()).models.find((m) => m.name === MODEL);
  if (!info) throw new Error(`model ${MODEL} not served`);
  neurons = info.neurons;
  frame = Float32Array.from({ length: neurons }, (_, i) => (i % 13) / 7);
  console.log(`model ${MODEL}: ${neurons} neurons, ${info.width}x${info.height}, ${info.provider}`);

  const paused = subscribe(srv.http, { stream: '*' });
  await paused.hello;
  // Never read: the server must skip frames for it rather than buffer without bound.
  paused.socket.pause();
  const viewer = subscribe(srv.http, { stream: '*' });
  await viewer.hello;
  const subs = { viewerFrames: 0, viewerClosed: '', pausedClosed: '', closing: false };
  // Only closes before we close them ourselves say something about the server.
  viewer.socket.on('close', (c: number) => void (subs.closing || (subs.viewerClosed = String(c))));
  paused.socket.on('close', (c: number) => void (subs.closing || (subs.pausedClosed = String(c))));
  const viewerDone = (async () => {
    for await (const _ of viewer) subs.viewerFrames++;
  })();

  const t0 = now();
  const endAt = t0 + minutes * 60_000;
  const conns: DecoderConnection[] = [control];
  const proxy = await startProxy(srv.grpcPort);
  const decodeConn = new DecoderConnection(grpcAddr);
  conns.push(decodeConn);
  const tasks = [
    ...Array.from({ length: nStreams }, (_, k) => rig(grpcAddr, k, false, conns)),
    rig(grpcAddr, nStreams, true, conns),
    decodeLoop(decodeConn),
    reloadLoop(control),
    churnLoop(proxy.port, proxy.cutAll),
    badLoop(srv),
  ];

  let start: Mem | undefined;
  let last: { m: Map<string, number>; atS: number } | undefined;
  const peak: Mem = { rss: 0, heap: 0, handles: 0 };
  let lastProgress = t0;
  const stopTimer = setTimeout(() => ac.abort(), endAt - now());
  while (!stopping()) {
    await sleep(SAMPLE_MS);
    const m = await scrape(srv.http);
    const s = mem(m);
    if (m) {
      last = { m, atS: (now() - t0) / 1000 };
      if (!start && now() - t0 >= WARMUP_MS) {
        start = s;
        console.log(`after ${(WARMUP_MS / 1000).toFixed(0)} s warm-up: server RSS ${s.rss.toFixed(1)} MB, heap ${s.heap.toFixed(1)} MB, handles ${s.handles}`);
      }
      peak.rss = Math.max(peak.rss, s.rss);
      peak.heap = Math.max(peak.heap, s.heap);
      peak.handles = Math.max(peak.handles, s.handles);
    }
    if (now() - lastProgress >= PROGRESS_MS - 100 || stopping()) {
      lastProgress = now();
      console.log(`${((now() - t0) / 1000).toFixed(0).padStart(4)} s  sent ${ledger.sent}  decoded ${acks.get('DECODED') ?? 0}  dropped ${acks.get('DROPPED') ?? 0}  rejected ${acks.get('REJECTED') ?? 0}  rss ${m ? s.rss.toFixed(1) : '?'} MB  churn ${[...churn.values()].reduce((a, b) => a + b, 0)}${alive(srv) ? '' : '  SERVER DIED'}`);
    }
  }
  clearTimeout(stopTimer);
  const diedMidRun = srv.exit && !srv.exit.expected ? srv.exit : undefined;
  if (diedMidRun) console.log(`server died after ${((diedMidRun.atMs - t0) / 1000).toFixed(1)} s (exit ${diedMidRun.code ?? diedMidRun.signal}); ending the run`);
  else console.log('time up: ending every stream normally and awaiting done');

  // Every generator ends its streams (end() + done) on the way out.
  await Promise.all(tasks);
  const soakS = (now() - t0) / 1000;
  const beforeClose = await scrape(srv.http);
  // A paused socket would not read the server's close frame; resume so the close handshake completes.
  subs.closing = true;
  paused.socket.resume();
  paused.close();
  viewer.close();
  await withTimeout(viewerDone, 2000);
  for (const c of conns) c.close();
  proxy.close();
  // Let the server notice the closed connections before counting its handles.
  await delay(2000);
  const end = await scrape(srv.http);
  const endMem = mem(end);

  // --- report
  const final = (['DECODED', 'DROPPED', 'REJECTED'] as const).map((s) => `${s} ${acks.get(s) ?? 0}`).join(', ');
  console.log(`\n== soak report (${soakS.toFixed(0)} s) ==`);
  console.log(`frames sent ${ledger.sent} (rig, slow-reader, bad-input and normally-ended churn streams)`);
  console.log(`final acks on those streams: ${(['DECODED', 'DROPPED', 'REJECTED'] as const).map((s) => `${s} ${ledger.finals.get(s) ?? 0}`).join(', ')}`);
  console.log(`acks on all streams (also cancelled / cut churn and the 4 MB one): ${final}${acks.get('ACCEPTED') ? `, ACCEPTED ${acks.get('ACCEPTED')}` : ''}`);
  console.log(`unaccounted (sent, no final ack, on normally-ended streams): ${ledger.unaccounted}${ledger.unaccounted ? ` (${fmtMap(ledger.unaccountedByKind)})` : ''}`);
  console.log(`unexpected acks (duplicate or unknown sequence): ${ledger.unexpected}`);
  console.log(`stream ends: ${fmtMap(ledger.doneStatus)}; done timeouts ${ledger.doneTimeouts}; ended by the server mid-run: ${fmtMap(ledger.serverEnded)}`);
  for (const [k, v] of firstDetails) console.log(`  first ${k} details seen (any call): ${v}`);
  const bl = slowStats.backlog;
  console.log(
    `slow ack reader: ${slowStats.pauses} pauses of ${pauseS} s, ${(slowStats.pausedMs / 1000).toFixed(0)} s unread; acks within 300 ms of resume: mean ${bl.length ? (bl.reduce((a, b) => a + b, 0) / bl.length).toFixed(0) : '-'}, max ${bl.length ? Math.max(...bl) : '-'} (about ${Math.round(pauseS * HZ)} when every ack was held back)`,
  );
  console.log(`unary decode: ok ${unary.ok}, errors: ${fmtMap(unary.errors)}`);
  console.log(`reloads: ok ${reloads.ok}, failed: ${fmtMap(reloads.failed)}`);
  console.log(`churn: ${[...churn.values()].reduce((a, b) => a + b, 0)} connections (${fmtMap(churn)})`);
  console.log(`bad input: ${bad.batches} batches; unary ${fmtMap(bad.unary)}; 4 MB stream ${fmtMap(bad.oversizeStream)}`);
  for (const [k, v] of bad.raw) console.log(`  ${k}  (x${v})`);
  // A dead server has no /metrics: fall back to the last sample and say so.
  const metricsAt = end ?? beforeClose ?? last?.m;
  if (!end && !beforeClose) console.log(`(server /metrics unreachable at the end; counters below are from the sample at ${last ? last.atS.toFixed(0) : '?'} s)`);
  console.log(`rejected (server /metrics by reason): ${fmtMap(byLabel(metricsAt, 'cortexcast_frames_rejected_total', 'reason'))}`);
  console.log(`dropped (server /metrics by reason): ${fmtMap(byLabel(metricsAt, 'cortexcast_frames_dropped_total', 'reason'))}`);
  console.log(`subscribers: viewer got ${subs.viewerFrames} frames${subs.viewerClosed ? ` (closed early ${subs.viewerClosed})` : ''}; paused one ${subs.pausedClosed ? `closed by the server ${subs.pausedClosed}` : 'no close seen'}; frames skipped for slow subscribers ${series(metricsAt, 'cortexcast_subscriber_frames_skipped_total')}`);
  console.log(`server gauges after everything closed: streams ${series(end, 'cortexcast_streams')}, subscribers ${series(end, 'cortexcast_subscribers')}, queue depth ${series(end, 'cortexcast_queue_depth')}`);
  const f1 = (v: number | undefined): string => (v === undefined || Number.isNaN(v) ? '?' : v.toFixed(1));
  console.log(`server RSS MB: start ${f1(start?.rss)}, peak ${f1(peak.rss)}, end ${f1(endMem.rss)}; heap used MB: start ${f1(start?.heap)}, peak ${f1(peak.heap)}, end ${f1(endMem.heap)}`);
  console.log(`server open handles: start ${start?.handles ?? '?'}, peak ${peak.handles}, end ${Number.isNaN(endMem.handles) ? '?' : endMem.handles}; active resources end ${series(end, 'nodejs_active_resources')}`);
  console.log(`server log lines by level: ${fmtMap(srv.logLevels)}`);
  for (const [k, v] of [...srv.problems].sort((a, b) => b[1] - a[1]).slice(0, 8)) console.log(`  x${v} ${k}`);

  const problems: string[] = [];
  const died = !alive(srv);
  console.log(`server process ${srv.child.pid} alive at the end: ${died ? 'NO' : 'yes'}`);
  if (died) {
    problems.push(`server died (exit ${srv.exit?.code ?? srv.exit?.signal})`);
    console.log(`last server stderr:\n  ${srv.stderrTail.slice(-15).join('\n  ')}`);
  } else {
    srv.stopRequested = true;
    const ts = now();
    srv.child.kill('SIGTERM');
    const r = await withTimeout(new Promise<void>((res) => srv.child.once('exit', () => res())), graceMs + 15_000);
    if (r === 'timeout') {
      srv.child.kill('SIGKILL');
      console.log(`SIGTERM: still running after ${((now() - ts) / 1000).toFixed(1)} s (grace ${graceMs} ms); killed`);
    } else console.log(`SIGTERM: exited in ${(now() - ts).toFixed(0)} ms (exit ${srv.exit?.code ?? srv.exit?.signal}, grace ${graceMs} ms)`);
  }
  if (ledger.unaccounted) problems.push(`${ledger.unaccounted} frames unaccounted`);
  const growth = endMem.rss - (start?.rss ?? NaN);
  if (!died) {
    if (Number.isNaN(growth)) problems.push('RSS growth unknown (no start or end sample)');
    else if (growth > maxRssGrowthMb) problems.push(`RSS grew ${growth.toFixed(1)} MB`);
  }
  console.log(`RSS growth ${Number.isNaN(growth) ? '?' : growth.toFixed(1)} MB (bound --max-rss-growth-mb ${maxRssGrowthMb})`);
  console.log(problems.length ? `FAIL: ${problems.join('; ')}` : 'PASS');
  process.exitCode = problems.length ? 1 : 0;
}

await main().catch((e: Error) => {
  console.error(e);
  process.exitCode = 2;
});
// Client channels and stray sockets may keep the loop alive; the report is out.
process.exit(process.exitCode ?? 0);
