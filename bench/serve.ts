/**
 * `npm run bench:serve`: 8,600-neuron frames at 30 Hz from 1, 4 and 16 concurrent streams (each its own
 * gRPC connection, as separate rigs), through the real server (a separate process) to one WebSocket
 * subscriber per stream, for each decoder built at its trained shapes with random weights: ridge, cnn
 * (cortexcast's default, the ridge refiner with the contrast read-out), gan (the small ridge-anchored generator, MEI readin),
 * gan-realtime (the GAN's realtime profile: its readin on a 9x16 grid),
 * latent-vae (MLP readin + VAE decoder), latent-vae-realtime (the same with the realtime VAE's decoder), their int8 copies (cortexcast quantize), invenc (the small
 * encoder's gradient step, --invenc-steps per frame) and cnn-report (the report's small CNN). End to end =
 * subscriber receipt minus the sender's acquisition stamp (same machine clock). Two references in
 * the same run:
 *   (a) direct: the same decode called directly on a worker thread, no server, batch 1;
 *   (b) floor: a bare grpc-js -> msgpackr -> ws relay of the same frames (bench/relay-server.ts).
 * Per case: e2e p50/p99, frames/s decoded of sent, drops, then the decoded fraction, the batch size
 * and decode time the server actually had (its /metrics counters over the case), and where the median
 * millisecond goes: floor (transport) + decode (mean per server batch) + the rest (the server's own
 * share: queueing, scaling, fan-out).
 *
 *   npm run bench:serve -- [--seconds 10] [--streams 1,4,16] [--models ridge,ridge-int8,cnn,cnn-int8,gan,gan-int8,gan-realtime,gan-realtime-int8,
 *     latent-vae,latent-vae-int8,latent-vae-realtime,latent-vae-realtime-int8,invenc,cnn-report,cnn-fullcontrast,cnn-fullcontrast-int8] [--contrast-downsample f] [--neurons 8600] [--providers webgpu,cpu] [--max-batch 8]
 *     [--layouts 1x2,2x1] (server workers x ORT threads each) [--decode-nice 0,10] (inference-thread nice values)
 *     [--mei-neurons 512] [--invenc-steps 50]
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
import { MLP_READIN_PROFILES, VAE_PROFILES, greyToZ, mlpReadin, vaeDecoder } from '../src/models/architectures/autoencoder.js';
import { resizeImage } from '../src/models/layers.js';
import { cnnDecoder, CNN_PROFILES } from '../src/models/architectures/cnn.js';
import { ENCODER_OUTPUT, ENCODER_PROFILES, encoderNet } from '../src/models/architectures/encoder.js';
import { GAN_PROFILES, ganGenerator } from '../src/models/architectures/gan.js';
import { buildImageStep, MAX_BLUR_RADIUS, STEP_IMAGE, STEP_KERNEL, STEP_LR, STEP_NEXT, STEP_TARGET } from '../src/training/encoder/image-optimisation.js';
import { REFINER_PROFILES, refinerCorrection } from '../src/models/architectures/refiner.js';
import { anchorImageChannel, buildRidgeGraph, DECODER_INPUT, DECODER_OUTPUT, ridgeImage } from '../src/models/architectures/ridge.js';
import { writeBundle } from '../src/models/bundle.js';
import { newGraph, writeModel } from '../src/models/onnx/index.js';
import { quantizeModel } from '../src/models/quantize.js';
import { Rng } from '../src/models/rng.js';
import { percentile } from '../src/common/stats.js';
import { WorkerPool } from '../src/server/worker-pool.js';
import { CONTRAST_DOWNSAMPLE } from '../src/training/decoders/train-decoder.js';

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const seconds = Number(arg('seconds', '10'));
const streamCounts = arg('streams', '1,4,16').split(',').map(Number);
const ALL_MODELS = ['ridge', 'ridge-int8', 'cnn', 'cnn-int8', 'gan', 'gan-int8', 'gan-realtime', 'gan-realtime-int8', 'latent-vae', 'latent-vae-int8', 'latent-vae-realtime', 'latent-vae-realtime-int8', 'invenc', 'cnn-report', 'cnn-fullcontrast', 'cnn-fullcontrast-int8'];
/** Served unless --models names others: the refiner with the full-size contrast read-out is for comparison only. */
const DEFAULT_MODELS = ALL_MODELS.filter((m) => !m.startsWith('cnn-fullcontrast'));
const models = arg('models', DEFAULT_MODELS.join(',')).split(',');
const contrastDownsample = Number(arg('contrast-downsample', String(CONTRAST_DOWNSAMPLE)));
for (const m of models) if (!ALL_MODELS.includes(m)) throw new Error(`--models: unknown ${m} (${ALL_MODELS.join(', ')})`);
/** Server layouts to compare, workers x ORT threads each (e.g. 1x2,2x1). */
const layouts = arg('layouts', '1x2').split(',').map((l) => {
  const [w, t] = l.split('x').map(Number);
  if (!(w >= 1 && t >= 1)) throw new Error(`--layouts: ${l} is not <workers>x<threads>`);
  return { name: l, workers: w, threads: t };
});
/** Inference-thread nice values to compare (the server's decodeNice; 0 = the server's own priority). */
const niceValues = arg('decode-nice', '0').split(',').map((v) => {
  const n = Number(v);
  if (!(Number.isInteger(n) && n >= 0 && n <= 19)) throw new Error(`--decode-nice: ${v} is not an integer 0-19`);
  return n;
});
const meiNeurons = Number(arg('mei-neurons', '512'));
const invencSteps = Number(arg('invenc-steps', '50'));
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
  // The default recipe's refiner: the ridge image and the contrast read-out (on a grid `contrastDownsample`
  // times coarser, upsampled in the graph), and as `cnn-fullcontrast` both at full size (one [neurons, 2 x 2304] MatMul).
  const refiner = (name: string, f: number): ReturnType<typeof newGraph> => {
    const r = newGraph(name);
    const ctx = { g: r, rng: new Rng(3) };
    const input = r.input(DECODER_INPUT, 'float32', ['batch', neurons]);
    const [h, w] = [Math.round(36 / f), Math.round(64 / f)];
    const cols = 2304 + h * w;
    const contrastAnchor = { weights: Float32Array.from({ length: neurons * cols }, () => rng.normal() * 0.01), bias: new Float32Array(cols), height: 36, width: 64, channels: 2, ...(f > 1 && { grids: [[36, 64], [h, w]] as const }) };
    const base = ridgeImage(ctx, input, contrastAnchor);
    r.output(r.op('Add', [anchorImageChannel(ctx, base, contrastAnchor), refinerCorrection(ctx, base, REFINER_PROFILES.small)]), DECODER_OUTPUT);
    return r;
  };
  const cnn = refiner('cnn_refiner_small', contrastDownsample);
  const cnnFull = refiner('cnn_refiner_small_fullcontrast', 1);
  writeBundle(join(dir, 'cnn'), { ...common, name: 'cnn', kind: 'cnn', model: writeModel(cnn), opset: cnn.opset });
  writeBundle(join(dir, 'cnn-fullcontrast'), { ...common, name: 'cnn-fullcontrast', kind: 'cnn', model: writeModel(cnnFull), opset: cnnFull.opset });
  const anchor = { weights: W, bias: new Float32Array(2304), height: 36, width: 64, channels: 1 };
  // cortexcast's GAN: the small generator (and the realtime profile's: the readin on a 9x16 grid), ridge-anchored, MEI readin on the top `meiNeurons`.
  const meis = Float32Array.from({ length: meiNeurons * 2304 }, () => rng.normal() * 0.1);
  const ganGraph = (name: string, profile: 'small' | 'realtime'): ReturnType<typeof newGraph> => {
    const gg = newGraph(name);
    const gen = ganGenerator({ g: gg, rng: new Rng(4), mode: 'eval' }, 'batch', GAN_PROFILES[profile], { neurons, mei: { meis, neuronIndex: Array.from({ length: meiNeurons }, (_, i) => i * Math.floor(neurons / meiNeurons)) }, anchor });
    gg.output(gen.output, DECODER_OUTPUT);
    return gg;
  };
  const gan = ganGraph('gan_small', 'small');
  const ganRealtime = ganGraph('gan_realtime', 'realtime');
  writeBundle(join(dir, 'gan'), { ...common, name: 'gan', kind: 'gan', model: writeModel(gan), opset: gan.opset });
  writeBundle(join(dir, 'gan-realtime'), { ...common, name: 'gan-realtime', kind: 'gan', model: writeModel(ganRealtime), opset: ganRealtime.opset });
  // The latent VAE decoder: the MLP readin (small) -> the VAE's decoder -> resize -> z-scored pixels.
  // `latent-vae-realtime`: the same readin chained with the realtime VAE's decoder (train autoencoder --profile realtime).
  const latentGraph = (name: string, vae: 'small' | 'realtime'): ReturnType<typeof newGraph> => {
    const lg = newGraph(name);
    const lctx = { g: lg, rng: new Rng(5), mode: 'eval' as const };
    const linput = lg.input(DECODER_INPUT, 'float32', ['batch', neurons]);
    const grey = vaeDecoder(lctx, mlpReadin(lctx, linput, [4, 8, 8], MLP_READIN_PROFILES.small), VAE_PROFILES[vae]);
    lg.output(greyToZ(lctx, resizeImage(lctx, grey, 36, 64), 128, 40), DECODER_OUTPUT);
    return lg;
  };
  const lat = latentGraph('latent_vae_small', 'small');
  const latRealtime = latentGraph('latent_vae_realtime', 'realtime');
  writeBundle(join(dir, 'latent-vae'), { ...common, name: 'latent-vae', kind: 'latent', model: writeModel(lat), opset: lat.opset });
  writeBundle(join(dir, 'latent-vae-realtime'), { ...common, name: 'latent-vae-realtime', kind: 'latent', model: writeModel(latRealtime), opset: latRealtime.opset });
  // The inverted encoder: the small encoder's one-step gradient graph, run `invencSteps` times per frame.
  const enc = newGraph('encoder_small');
  const e = encoderNet({ g: enc, rng: new Rng(6), mode: 'eval' }, 'batch', neurons, ENCODER_PROFILES.small);
  enc.output(e.output, ENCODER_OUTPUT);
  const step = buildImageStep(writeModel(enc), 'invert', { blurRadius: MAX_BLUR_RADIUS });
  writeBundle(join(dir, 'invenc'), {
    ...common,
    name: 'invenc',
    kind: 'invenc',
    model: writeModel(step),
    opset: step.opset,
    inputName: STEP_TARGET,
    outputName: STEP_NEXT,
    iterative: { imageInput: STEP_IMAGE, lrInput: STEP_LR, kernelInput: STEP_KERNEL, steps: invencSteps, lr: 1000, blurSigma: 1.5, blurRadius: MAX_BLUR_RADIUS, seed: 1 },
  });
  // cortexcast quantize's graphs (its quality check needs a dataset; timing does not).
  for (const [name, kind, model] of [['ridge-int8', 'ridge', writeModel(ridge)], ['cnn-int8', 'cnn', writeModel(cnn)], ['cnn-fullcontrast-int8', 'cnn', writeModel(cnnFull)], ['gan-int8', 'gan', writeModel(gan)], ['gan-realtime-int8', 'gan', writeModel(ganRealtime)], ['latent-vae-int8', 'latent', writeModel(lat)], ['latent-vae-realtime-int8', 'latent', writeModel(latRealtime)]] as const)
    writeBundle(join(dir, name), { ...common, name, kind, model: quantizeModel(model).model, opset: 17 });
  return Object.fromEntries(ALL_MODELS.map((m) => [m, join(dir, m)]));
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
  const acquired: number[] = [];
  let sent = 0;
  let dropped = 0;
  const frame = Float32Array.from({ length: neurons }, (_, i) => (i % 13) / 7);
  const subs = await Promise.all(
    Array.from({ length: n }, async (_, k) => {
      const sub = subscribe(http, { stream: `rig-${k}`, model });
      await sub.hello;
      void (async () => {
        for await (const f of sub) {
          if (!f.t.acquired) continue;
          acquired.push(f.t.acquired);
          e2e.push(f.received - f.t.acquired);
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
  // Drop the frames acquired in the warm-up second (by stamp: a slow decoder returns few of them).
  const kept = e2e.filter((_, i) => acquired[i] > t0 + warm);
  return { e2e: kept, sent, received: kept.length, dropped };
}

/** Reference (a): the decode alone, on a worker thread like the server's, at 30 Hz. */
async function direct(bundle: string, frames: number): Promise<number[]> {
  const { loadBundle } = await import('../src/models/bundle.js');
  const b = loadBundle(bundle);
  const m = b.manifest;
  const pool = await WorkerPool.start({ model: b.model, manifest: { kind: m.kind, onnx: m.onnx, input: m.input, output: m.output, iterative: m.iterative }, providers: providers.split(',') as ('cuda' | 'webgpu' | 'cpu')[], threads: 2 }, 1);
  if (pool.fallbacks.length) console.log(`direct ${bundle.split('/').pop()}: provider ${pool.provider}; skipped: ${pool.fallbacks.join('; ')}`);
  const out: number[] = [];
  // At most `frames` decodes or `seconds` of them: an iterative decoder takes up to a second a frame.
  const until = now() + seconds * 1000;
  for (let i = 0; i < frames && (i === 0 || now() < until); i++) {
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
    for (const layout of layouts.flatMap((l) => niceValues.map((nice) => ({ ...l, nice })))) {
      const label = [model, layouts.length > 1 ? `@${layout.name}` : '', niceValues.length > 1 ? `+nice${layout.nice}` : ''].join('');
      const srv = await startChild(
        ['bin/cortexcast.js', 'serve', '--model', `${model}=${bundles[model]}`, '--grpc-port', '0', '--http-port', '0', '--workers', String(layout.workers), '--threads', String(layout.threads), '--providers', providers, '--max-batch', maxBatch, '--decode-nice', String(layout.nice)],
        (l) => {
          if (!l.includes('"serving"')) return undefined;
          const j = JSON.parse(l) as { grpc: string; http: string };
          return { grpcPort: Number(j.grpc.split(':').pop()), httpPort: Number(new URL(j.http).port) };
        },
        true,
      );
      const http = `http://127.0.0.1:${srv.httpPort}`;
      const served = ((await (await fetch(`${http}/api/models`)).json()) as { models: { provider: string }[] }).models[0].provider;
      console.log(`server ${label}: execution provider ${served} (asked for ${providers}), ${layout.workers} worker(s) x ${layout.threads} thread(s), decode nice ${layout.nice}`);
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
          `server ${label} ${String(n).padStart(2)} streams: e2e p50 ${pct(r.e2e, 50).toFixed(2)} ms  p99 ${pct(r.e2e, 99).toFixed(2)} ms, ${(r.received / seconds).toFixed(0)} frames/s of ${(r.sent / seconds).toFixed(0)} sent, ${r.dropped} dropped`,
        );
        const rest = pct(r.e2e, 50) - pct(f, 50) - batchMs;
        // Sent and received both count frames after the warm-up second; a frame stamped at its edge can fall on either side.
        shares.push(
          `  ${label} ${n} streams: decoded ${((100 * Math.min(r.received, r.sent)) / Math.max(1, r.sent)).toFixed(1)}%, p99 ${pct(r.e2e, 99) < 1000 / HZ ? 'within' : 'over'} one frame period; server batches of ${meanBatch.toFixed(1)} frames took ${batchMs.toFixed(2)} ms (batch 1 direct: ${pct(d, 50).toFixed(2)}); p50 = floor ${pct(f, 50).toFixed(2)} + decode ${batchMs.toFixed(2)} + server ${rest.toFixed(2)} ms`,
        );
      }
      clearInterval(sampler);
      const rss1 = await serverRss(http);
      console.log(`server ${label} RSS: start ${rss0.toFixed(0)} MB, peak ${peak.toFixed(0)} MB, end ${rss1.toFixed(0)} MB (growth ${(rss1 - rss0).toFixed(0)} MB over ${streamCounts.length * (seconds + 1)} s)`);
      for (const line of shares) console.log(line);
      srv.child.kill('SIGTERM');
      await new Promise((r) => srv.child.once('exit', r));
    }
  }
}

await main();
process.exit(0);
