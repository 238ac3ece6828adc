/**
 * `npm run bench:serve`: 8,600-neuron frames at 30 Hz from 1, 4 and 16 concurrent streams (each its own
 * gRPC connection, as separate rigs), through the real server (a separate process) to one WebSocket
 * subscriber per stream, for each decoder built at its trained shapes with random weights: ridge, cnn
 * (cortexcast's default, the ridge refiner), their int8 copies (cortexcast quantize: ridge-int8,
 * cnn-int8) and cnn-report (the report's small CNN). End to end =
 * subscriber receipt minus the sender's acquisition stamp (same machine clock). Two references in
 * the same run:
 *   (a) direct: the same decode called directly on a worker thread, no server, batch 1;
 *   (b) floor: a bare grpc-js -> msgpackr -> ws relay of the same frames (bench/relay-server.ts).
 * Per case: e2e p50/p99, frames/s decoded of sent, drops, then the decoded fraction, the batch size
 * and decode time the server actually had (its /metrics counters over the case), and where the median
 * millisecond goes: floor (transport) + decode (mean per server batch) + the rest (the server's own
 * share: queueing, scaling, fan-out).
 *
 *   npm run bench:serve -- [--seconds 10] [--streams 1,4,16] [--models ridge,ridge-int8,cnn,cnn-int8,cnn-report] [--neurons 8600] [--providers webgpu,cpu] [--max-batch 8]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import os from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import ort from 'onnxruntime-node';
import { DecoderConnection, subscribe, type FrameAck } from '../clients/lib/index.js';
import { cnnDecoder, CNN_PROFILES } from '../src/models/architectures/cnn.js';
import { REFINER_PROFILES, refinerCorrection } from '../src/models/architectures/refiner.js';
import { buildRidgeGraph, DECODER_INPUT, DECODER_OUTPUT, ridgeImage } from '../src/models/architectures/ridge.js';
import { writeBundle } from '../src/models/bundle.js';
import { newGraph, writeModel } from '../src/models/onnx/index.js';
import { quantizeModel } from '../src/models/quantize.js';
import { Rng } from '../src/models/rng.js';
import { percentile } from '../src/common/stats.js';
import { WorkerPool } from '../src/server/worker-pool.js';

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const seconds = Number(arg('seconds', '10'));
const streamCounts = arg('streams', '1,4,16').split(',').map(Number);
const models = arg('models', 'ridge,ridge-int8,cnn,cnn-int8,cnn-report').split(',');
const neurons = Number(arg('neurons', '8600'));
const providers = arg('providers', 'cpu');
const maxBatch = arg('max-batch', '8');
const HZ = 30;
const repo = fileURLToPath(new URL('..', import.meta.url));
const now = (): number => performance.timeOrigin + performance.now();

const pct = percentile;

/** Bundles with random weights of the right shapes: latency does not depend on training. */
function makeBundles(dir: string): Record<string, string> {
  const rng = new Rng(1);
  const W = Float32Array.from({ length: neurons * 2304 }, () => rng.normal() * 0.01);
  const common = {
    unitIds: Array.from({ length: neurons }, (_, i) => i + 1),
    stdScale: new Float32Array(neurons).fill(1),
    responseScaling: 'brainreader' as const,
    height: 36,
    width: 64,
    pixelMean: 128,
    pixelStd: 40,
    inputName: DECODER_INPUT,
    outputName: DECODER_OUTPUT,
    training: { dataset: 'bench (random weights)', config: {} },
    version: 'bench',
    onnxruntime: ort.env.versions.node ?? '',
  };
  const ridge = buildRidgeGraph(W, new Float32Array(2304), neurons, 36, 64);
  writeBundle(join(dir, 'ridge'), { ...common, name: 'ridge', kind: 'ridge', model: writeModel(ridge), opset: ridge.opset });
  const g = newGraph('cnn_small');
  const { output } = cnnDecoder({ g, rng: new Rng(2) }, neurons, 'batch', CNN_PROFILES.small);
  g.output(output, DECODER_OUTPUT);
  writeBundle(join(dir, 'cnn-report'), { ...common, name: 'cnn-report', kind: 'cnn', model: writeModel(g), opset: g.opset });
  const r = newGraph('cnn_refiner_small');
  const ctx = { g: r, rng: new Rng(3) };
  const input = r.input(DECODER_INPUT, 'float32', ['batch', neurons]);
  const base = ridgeImage(ctx, input, { weights: W, bias: new Float32Array(2304), height: 36, width: 64 });
  r.output(r.op('Add', [base, refinerCorrection(ctx, base, REFINER_PROFILES.small)]), DECODER_OUTPUT);
  writeBundle(join(dir, 'cnn'), { ...common, name: 'cnn', kind: 'cnn', model: writeModel(r), opset: r.opset });
  // cortexcast quantize's graphs (its quality check needs a dataset; timing does not).
  for (const [name, kind, model] of [['ridge-int8', 'ridge', writeModel(ridge)], ['cnn-int8', 'cnn', writeModel(r)]] as const)
    writeBundle(join(dir, name), { ...common, name, kind, model: quantizeModel(model).model, opset: 17 });
  return Object.fromEntries(['ridge', 'ridge-int8', 'cnn', 'cnn-int8', 'cnn-report'].map((m) => [m, join(dir, m)]));
}

interface Proc {
  child: ChildProcess;
  grpcPort: number;
  httpPort: number;
}

function startChild(cmd: string[], parse: (line: string) => { grpcPort: number; httpPort: number } | undefined, fromStderr: boolean): Promise<Proc> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--max-semi-space-size=1', ...cmd], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
    const rl = createInterface({ input: (fromStderr ? child.stderr : child.stdout)! });
    rl.on('line', (l) => {
      const p = parse(l);
      if (p) resolve({ child, ...p });
    });
    child.on('exit', (c) => reject(new Error(`${cmd.join(' ')} exited ${c}`)));
  });
}

/** The server's decode counters (all models): seconds and runs of decoding, frames decoded in them. */
async function decodeCounters(http: string): Promise<{ seconds: number; runs: number; frames: number }> {
  const text = await (await fetch(`${http}/metrics`)).text();
  const sum = (metric: string): number => [...text.matchAll(new RegExp(`^${metric}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'gm'))].reduce((a, m) => a + Number(m[1]), 0);
  return { seconds: sum('cortexcast_decode_seconds_sum'), runs: sum('cortexcast_decode_seconds_count'), frames: sum('cortexcast_decode_batch_frames_sum') };
}

async function serverRss(http: string): Promise<number> {
  const text = await (await fetch(`${http}/metrics`)).text();
  return Number(/process_resident_memory_bytes (\d+)/.exec(text)?.[1] ?? NaN) / 2 ** 20;
}

interface RunResult {
  e2e: number[];
  sent: number;
  received: number;
  dropped: number;
}

/** N streams at 30 Hz for `seconds`, one subscriber per stream. */
async function drive(grpcPort: number, http: string, n: number, model: string): Promise<RunResult> {
  const e2e: number[] = [];
  let received = 0;
  let sent = 0;
  let dropped = 0;
  const frame = Float32Array.from({ length: neurons }, (_, i) => (i % 13) / 7);
  const subs = await Promise.all(
    Array.from({ length: n }, async (_, k) => {
      const sub = subscribe(http, { stream: `rig-${k}`, model });
      await sub.hello;
      void (async () => {
        for await (const f of sub) {
          received++;
          if (f.t.acquired) e2e.push(f.received - f.t.acquired);
        }
      })();
      return sub;
    }),
  );
  const conns = Array.from({ length: n }, () => new DecoderConnection(`127.0.0.1:${grpcPort}`));
  const streams = conns.map((c) => c.openStream((a: FrameAck) => void (a.status === 'DROPPED' && dropped++)));
  const t0 = now();
  const warm = 1000;
  // Each rig on its own 30 Hz clock, phases spread so rigs do not send in the same tick.
  await Promise.all(
    streams.map(async (s, k) => {
      let seq = 0;
      const start = t0 + (k * 1000) / HZ / n;
      for (;;) {
        const due = start + (seq * 1000) / HZ;
        if (due > t0 + warm + seconds * 1000) break;
        const wait = due - now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        seq++;
        if (now() > t0 + warm) sent++;
        s.send({ streamId: `rig-${k}`, model, sequence: seq, responses: frame });
      }
      s.end();
      await s.done.catch(() => undefined);
    }),
  );
  await new Promise((r) => setTimeout(r, 300));
  for (const s of subs) s.close();
  for (const c of conns) c.close();
  // Drop the warm-up second's frames.
  const skip = Math.round(n * HZ * (warm / 1000));
  return { e2e: e2e.slice(skip), sent, received: Math.max(0, received - skip), dropped };
}

/** Reference (a): the decode alone, on a worker thread like the server's, at 30 Hz. */
async function direct(bundle: string, frames: number): Promise<number[]> {
  const { loadBundle } = await import('../src/models/bundle.js');
  const b = loadBundle(bundle);
  const m = b.manifest;
  const pool = await WorkerPool.start({ model: b.model, manifest: { kind: m.kind, onnx: m.onnx, input: m.input, output: m.output, iterative: m.iterative }, providers: providers.split(',') as ('cuda' | 'webgpu' | 'cpu')[], threads: 2 }, 1);
  if (pool.fallbacks.length) console.log(`direct ${bundle.split('/').pop()}: provider ${pool.provider}; skipped: ${pool.fallbacks.join('; ')}`);
  const out: number[] = [];
  for (let i = 0; i < frames; i++) {
    const t = now();
    await pool.tryRun(new Float32Array(neurons).fill(0.5), 1)!;
    out.push(now() - t);
    await new Promise((r) => setTimeout(r, 1000 / HZ));
  }
  await pool.close();
  return out;
}

async function main(): Promise<void> {
  console.log(`bench:serve  ${neurons} neurons, ${HZ} Hz per stream, ${seconds} s per case, max batch ${maxBatch}, ${os.cpus().length} cores (${os.cpus()[0]?.model ?? ''}), Node ${process.version}`);
  const dir = mkdtempSync(join(tmpdir(), 'cc-bench-serve-'));
  const bundles = makeBundles(dir);
  const relay = await startChild(['--import', 'tsx', 'bench/relay-server.ts'], (l) => (l.startsWith('{') ? (JSON.parse(l) as { grpcPort: number; httpPort: number }) : undefined), false);
  const floor = new Map<number, number[]>();
  for (const n of streamCounts) {
    const r = await drive(relay.grpcPort, `http://127.0.0.1:${relay.httpPort}`, n, 'ridge');
    floor.set(n, r.e2e);
    console.log(`floor  ${String(n).padStart(2)} streams: p50 ${pct(r.e2e, 50).toFixed(2)} ms  p99 ${pct(r.e2e, 99).toFixed(2)} ms  (${r.received}/${r.sent} frames)`);
  }
  relay.child.kill('SIGTERM');
  for (const model of models) {
    const d = await direct(bundles[model], Math.min(300, seconds * HZ));
    console.log(`direct ${model}: decode on a worker p50 ${pct(d, 50).toFixed(2)} ms  p99 ${pct(d, 99).toFixed(2)} ms`);
    const srv = await startChild(
      ['bin/cortexcast.js', 'serve', '--model', `${model}=${bundles[model]}`, '--grpc-port', '0', '--http-port', '0', '--threads', '2', '--providers', providers, '--max-batch', maxBatch],
      (l) => {
        if (!l.includes('"serving"')) return undefined;
        const j = JSON.parse(l) as { grpc: string; http: string };
        return { grpcPort: Number(j.grpc.split(':').pop()), httpPort: Number(new URL(j.http).port) };
      },
      true,
    );
    const http = `http://127.0.0.1:${srv.httpPort}`;
    const served = ((await (await fetch(`${http}/api/models`)).json()) as { models: { provider: string }[] }).models[0].provider;
    console.log(`server ${model}: execution provider ${served} (asked for ${providers})`);
    const rss0 = await serverRss(http);
    let peak = rss0;
    const sampler = setInterval(() => void serverRss(http).then((v) => (peak = Math.max(peak, v))), 1000);
    const shares: string[] = [];
    for (const n of streamCounts) {
      const c0 = await decodeCounters(http);
      const r = await drive(srv.grpcPort, http, n, model);
      const c1 = await decodeCounters(http);
      const runs = Math.max(1, c1.runs - c0.runs);
      const batchMs = (1000 * (c1.seconds - c0.seconds)) / runs;
      const meanBatch = (c1.frames - c0.frames) / runs;
      const f = floor.get(n)!;
      console.log(
        `server ${model} ${String(n).padStart(2)} streams: e2e p50 ${pct(r.e2e, 50).toFixed(2)} ms  p99 ${pct(r.e2e, 99).toFixed(2)} ms, ${(r.received / seconds).toFixed(0)} frames/s of ${(r.sent / seconds).toFixed(0)} sent, ${r.dropped} dropped`,
      );
      const rest = pct(r.e2e, 50) - pct(f, 50) - batchMs;
      // The warm-up second is cut by an estimated frame count, so received can exceed sent by a frame or two.
      shares.push(
        `  ${model} ${n} streams: decoded ${((100 * Math.min(r.received, r.sent)) / Math.max(1, r.sent)).toFixed(1)}%, p99 ${pct(r.e2e, 99) < 1000 / HZ ? 'within' : 'over'} one frame period; server batches of ${meanBatch.toFixed(1)} frames took ${batchMs.toFixed(2)} ms (batch 1 direct: ${pct(d, 50).toFixed(2)}); p50 = floor ${pct(f, 50).toFixed(2)} + decode ${batchMs.toFixed(2)} + server ${rest.toFixed(2)} ms`,
      );
    }
    clearInterval(sampler);
    const rss1 = await serverRss(http);
    console.log(`server ${model} RSS: start ${rss0.toFixed(0)} MB, peak ${peak.toFixed(0)} MB, end ${rss1.toFixed(0)} MB (growth ${(rss1 - rss0).toFixed(0)} MB over ${streamCounts.length * (seconds + 1)} s)`);
    for (const line of shares) console.log(line);
    srv.child.kill('SIGTERM');
    await new Promise((r) => srv.child.once('exit', r));
  }
}

await main();
process.exit(0);
