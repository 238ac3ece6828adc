/**
 * `npm run bench:oip-batch`: what batching gains per frame on the Open Inference Protocol. The same
 * frames through one in-process server (1 worker, 1 ORT thread, defaults otherwise), as single-row
 * ModelInfer calls and as [B, N] calls, alternated in rounds so both see the same machine load.
 * Per mode: the decode time per frame the server measured (cortexcast_decode_seconds over the
 * frames it decoded) and the wall time per frame at the client (one call in flight at a time); the
 * ratio single / batched is what batching gains. The reference (single calls) runs in the same run.
 *
 *   npm run bench:oip-batch -- [--neurons 8600] [--batch 64] [--frames 512] [--rounds 3] [--bundle DIR]
 */
import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import ort from 'onnxruntime-node';
import { InferenceV2Connection } from '../clients/lib/index.js';
import { buildRidgeGraph, DECODER_INPUT, DECODER_OUTPUT } from '../src/models/architectures/ridge.js';
import { writeBundle } from '../src/models/bundle.js';
import { writeModel } from '../src/models/onnx/index.js';
import { Rng } from '../src/models/rng.js';
import { loadServerConfig } from '../src/server/config.js';
import { CortexcastServer } from '../src/server/server.js';

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const neurons = Number(arg('neurons', '8600'));
const B = Number(arg('batch', '64'));
const frames = Math.max(B, Math.round(Number(arg('frames', '512')) / B) * B);
const rounds = Number(arg('rounds', '3'));

function randomRidge(): string {
  const dir = join(mkdtempSync(join(tmpdir(), 'cc-bench-oip-')), 'ridge');
  const rng = new Rng(1);
  const g = buildRidgeGraph(Float32Array.from({ length: neurons * 2304 }, () => rng.normal() * 0.01), new Float32Array(2304), neurons, 36, 64);
  writeBundle(dir, {
    name: 'ridge', kind: 'ridge', model: writeModel(g), opset: g.opset, inputName: DECODER_INPUT, outputName: DECODER_OUTPUT,
    unitIds: Array.from({ length: neurons }, (_, i) => i + 1), stdScale: new Float32Array(neurons).fill(1), responseScaling: 'brainreader',
    height: 36, width: 64, pixelMean: 128, pixelStd: 40, training: { dataset: 'bench (random weights)', config: {} }, version: 'bench', onnxruntime: ort.env.versions.node ?? '',
  });
  return dir;
}

const bundle = arg('bundle', '') || randomRidge();
const server = await new CortexcastServer(loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'm', path: bundle }], workers: 1, threads: 1 } }), () => undefined).start();
const n = server.registry.get('m').neurons;
const client = new InferenceV2Connection(`127.0.0.1:${server.grpcPort}`);
const rng = new Rng(2);
const rows = Array.from({ length: frames }, () => Float32Array.from({ length: n }, () => Math.abs(rng.normal())));

/** Decode seconds and frames the server has counted so far. */
async function counters(): Promise<{ seconds: number; frames: number }> {
  const text = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
  const num = (re: RegExp): number => Number(re.exec(text)?.[1] ?? 0);
  return { seconds: num(/cortexcast_decode_seconds_sum\{model="m"[^}]*\} ([\d.e+-]+)/), frames: num(/cortexcast_decode_batch_frames_sum\{model="m"\} ([\d.e+-]+)/) };
}

async function measure(rowsPerCall: number): Promise<{ decodeMs: number; wallMs: number }> {
  const before = await counters();
  const t0 = performance.now();
  for (let i = 0; i < frames; i += rowsPerCall) await client.infer('m', rows.slice(i, i + rowsPerCall));
  const wall = performance.now() - t0;
  const after = await counters();
  return { decodeMs: ((after.seconds - before.seconds) * 1000) / (after.frames - before.frames), wallMs: wall / frames };
}

await measure(1);
await measure(B);
const single: { decodeMs: number; wallMs: number }[] = [];
const batched: { decodeMs: number; wallMs: number }[] = [];
for (let r = 0; r < rounds; r++) {
  single.push(await measure(1));
  batched.push(await measure(B));
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const s = { decode: median(single.map((x) => x.decodeMs)), wall: median(single.map((x) => x.wallMs)) };
const b = { decode: median(batched.map((x) => x.decodeMs)), wall: median(batched.map((x) => x.wallMs)) };
console.log(`oip-batch: ${n} neurons -> 36x64, ${frames} frames x ${rounds} rounds (median), 1 worker x 1 ORT thread; ${os.cpus().length} CPUs, load average ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);
console.log(`  single  [1, N]  decode ${s.decode.toFixed(3)} ms/frame   wall ${s.wall.toFixed(3)} ms/frame`);
console.log(`  batched [${B}, N] decode ${b.decode.toFixed(3)} ms/frame   wall ${b.wall.toFixed(3)} ms/frame`);
console.log(`  batching gains per frame: decode x${(s.decode / b.decode).toFixed(2)}, wall x${(s.wall / b.wall).toFixed(2)} (single / batched)`);
client.close();
await server.close();
