/**
 * `npm run bench:train`: the report's CNN decoder at paper size (the report's: FC readin to 64x18x32,
 * transposed convs 480-256-256-128-64-1), one training step (forward, MSE, backward, AdamW) at batch 16
 * and 64, and a batch-1 eval forward - on cortexcast's ONNX Runtime engine and on PyTorch on the same
 * machine when python3 can import torch. The two alternate, one process per measurement (each side
 * holds 5-15 GB at paper size; both at once would not fit in 24 GB). Prints medians, ours/PyTorch
 * ratios (lower is better) and each side's peak RSS. Both sides run `--warmup` steps before the timed
 * ones (the first steps pay for fresh memory) and under the same malloc settings: glibc's defaults, or
 * with `--malloc reuse` settings that keep freed blocks for reuse (PyTorch's CPU allocator gains most).
 * `--ort-profile <prefix>` writes ORT's per-node trace of our first round.
 *
 *   npm run bench:train -- [--neurons 8587] [--batches 16,64] [--steps 3] [--warmup 2] [--rounds 2]
 *                          [--profile paper|small] [--malloc default|reuse] [--ort-profile <prefix>]
 */
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import os from 'node:os';
import { cnnDecoder, CNN_PROFILES } from '../src/models/architectures/cnn.js';
import { tensor } from '../src/models/onnx/index.js';
import { mseLoss } from '../src/training/engine/losses.js';
import { TrainingSession } from '../src/training/engine/trainer.js';
import { percentile } from '../src/common/stats.js';

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const neurons = Number(arg('neurons', '8587'));
const batches = arg('batches', '16,64').split(',').map(Number);
const steps = Number(arg('steps', '3'));
const warmup = Number(arg('warmup', '2'));
const malloc = arg('malloc', 'default');
const ortProfile = arg('ort-profile', '');
if (malloc !== 'default' && malloc !== 'reuse') throw new Error(`--malloc must be default or reuse, not '${malloc}'`);
/** glibc never hands large blocks to mmap and never trims the heap: freed blocks are reused, not faulted in again. */
const REUSE_TUNABLES = 'glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736';
const rounds = Number(arg('rounds', '2'));
const profile = arg('profile', 'paper') as 'paper' | 'small';
const threads = Number(process.env.CORTEXCAST_THREADS ?? os.cpus().length);
const childEnv: NodeJS.ProcessEnv = { ...process.env, ...(malloc === 'reuse' ? { GLIBC_TUNABLES: REUSE_TUNABLES } : {}), BENCH_THREADS: String(threads) };

const median = (v: number[]): number => percentile(v, 50);
const randn = (n: number): Float32Array => Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(Math.random() + 1e-12)) * Math.cos(2 * Math.PI * Math.random()));

interface Measurement {
  all: number[];
  infer?: number;
  rssMb: number;
}

/** Child mode: one cortexcast measurement, printed as JSON. */
async function measureOurs(batch: number, withInference: boolean, profilePrefix?: string): Promise<Measurement> {
  const s = await TrainingSession.create({
    name: `cnn_${profile}`,
    batch,
    seed: 1,
    threads,
    profilePrefix,
    model: (ctx, b) => {
      const { input, output } = cnnDecoder(ctx, neurons, b, CNN_PROFILES[profile]);
      return { inputs: [input], output };
    },
    objective: (ctx, out) => {
      const y = ctx.g.input('target', 'float32', out.shape);
      return { targets: [y], loss: mseLoss(ctx, out, y) };
    },
    groups: [{ match: '', lr: 3e-4, weightDecay: 3e-2 }],
    optimizer: { kind: 'adamw' },
  });
  const x = tensor('float32', [batch, neurons], randn(batch * neurons));
  const y = tensor('float32', [batch, 1, 36, 64], randn(batch * 36 * 64));
  for (let k = 0; k < warmup; k++) await s.trainStep({ responses: x, target: y });
  const all: number[] = [];
  for (let k = 0; k < steps; k++) all.push((await s.trainStep({ responses: x, target: y })).ms);
  if (profilePrefix) s.endProfiling();
  let infer: number | undefined;
  if (withInference) {
    const x1 = tensor('float32', [1, neurons], randn(neurons));
    await s.evaluate({ responses: x1 });
    const t: number[] = [];
    for (let k = 0; k < 20; k++) {
      const t0 = performance.now();
      await s.evaluate({ responses: x1 });
      t.push(performance.now() - t0);
    }
    infer = median(t);
  }
  return { all, infer, rssMb: process.resourceUsage().maxRSS / 1024 };
}

function torchPython(): string | undefined {
  if (profile !== 'paper') return undefined;
  return ['python3', '/usr/bin/python3'].find((py) => spawnSync(py, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0);
}

function runChild(cmd: string, args: string[], input?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'], env: childEnv });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} exited with ${code}`))));
    p.stdin.end(input ?? '');
  });
}

async function measureTorch(py: string, batch: number, withInference: boolean): Promise<Measurement> {
  const script = fileURLToPath(new URL('./torch_cnn.py', import.meta.url));
  const out = await runChild(py, [script, String(neurons)], `train ${batch} ${steps} ${warmup}\n${withInference ? 'infer 20\n' : ''}rss\nquit\n`);
  const lines = out.trim().split('\n').map((l) => JSON.parse(l) as { all?: number[]; ms?: number; mb?: number });
  return { all: lines[0].all!, infer: withInference ? lines[1].ms : undefined, rssMb: lines[lines.length - 1].mb! };
}

async function main(): Promise<void> {
  const child = process.argv.indexOf('--child');
  if (child >= 0) {
    const m = await measureOurs(Number(process.argv[child + 1]), process.argv.includes('--infer'), process.argv.includes('--first') && ortProfile ? ortProfile : undefined);
    process.stdout.write(JSON.stringify(m) + '\n');
    return;
  }
  console.log(`bench:train  CNN decoder (${profile}), ${neurons} neurons, ${threads} threads, ${os.cpus()[0]?.model ?? 'cpu'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, malloc: ${malloc === 'reuse' ? REUSE_TUNABLES : 'defaults'}, ${warmup} warm-up + ${steps} timed steps`);
  const py = torchPython();
  if (!py) console.log('PyTorch reference: not available (apt-get install python3-torch libopenblas0-pthread); printing our times only');
  const self = fileURLToPath(import.meta.url);
  for (const batch of batches) {
    const ours: Measurement[] = [];
    const theirs: Measurement[] = [];
    const infer = batch === batches[0];
    for (let r = 0; r < rounds; r++) {
      const args = ['--import', 'tsx', self, ...process.argv.slice(2), '--child', String(batch), ...(infer && r === 0 ? ['--infer'] : []), ...(r === 0 ? ['--first'] : [])];
      ours.push(JSON.parse((await runChild(process.execPath, args)).trim().split('\n').pop()!) as Measurement);
      process.stderr.write(`  batch ${batch} round ${r + 1}: ours ${median(ours[r].all).toFixed(0)} ms\n`);
      if (py) {
        theirs.push(await measureTorch(py, batch, infer && r === 0));
        process.stderr.write(`  batch ${batch} round ${r + 1}: PyTorch ${median(theirs[r].all).toFixed(0)} ms\n`);
      }
    }
    const o = median(ours.flatMap((m) => m.all));
    const oRss = Math.max(...ours.map((m) => m.rssMb));
    let line = `train step batch ${String(batch).padStart(3)}: ours ${o.toFixed(0)} ms (peak RSS ${oRss.toFixed(0)} MB)`;
    if (theirs.length) {
      const t = median(theirs.flatMap((m) => m.all));
      const tRss = Math.max(...theirs.map((m) => m.rssMb));
      line += `, PyTorch ${t.toFixed(0)} ms (peak RSS ${tRss.toFixed(0)} MB); ours/PyTorch time ${(o / t).toFixed(2)}, memory ${(oRss / tRss).toFixed(2)}`;
    }
    console.log(line);
    if (infer) {
      const oi = ours[0].infer!;
      console.log(`inference batch   1: ours ${oi.toFixed(1)} ms` + (theirs.length ? `, PyTorch ${theirs[0].infer!.toFixed(1)} ms, ours/PyTorch ${(oi / theirs[0].infer!).toFixed(2)}` : ''));
    }
  }
}

await main();
