/**
 * npm run bench:calibrate -- [--quick] [--out DIR]
 *
 * A new animal decoded within minutes. A simulated mouse no decoder has seen streams its train-tier
 * trials (calibration stimuli at 2 per second, with their image ids and stimuli) through a real
 * server (`cortexcast serve --models-dir`, its own process) to a model name the server does not
 * know yet; `cortexcast calibrate` (another process, speaking the server's public protocols: the
 * /ws/responses feed and ReloadModels) refits every few seconds and has the server serve each
 * refit, with a refiner trained in this run on other simulated mice (`train refiner`'s code).
 *
 * Prints, after 1, 2, 5 and 10 minutes of calibration, the test-tier SSIML (lower is better; test
 * responses averaged over repeats, images no fit saw) of
 *   live   - the bundle the server was serving at that moment (its ridge alone, and with the refiner),
 *   (a)    - an offline ridge (training/ridge, alpha chosen on the validation tier) fitted on exactly
 *            the train trials the live bundle had,
 *   (b)    - the offline ridge on the whole train tier,
 * each with and without the transferred refiner, then one `live/offline SSIML <ratio>` line per time
 * (live over (a), ridge alone: 1.00 = as good as the offline fit on the same trials). Then the time
 * from a refit's newest frame to the server serving its bundle, and the frames the server did not
 * decode after the first bundle served (during and outside reloads).
 *
 * Drift: the same animal with drifting gains (a log-gain random walk) and a change of ROIs part-way,
 * fed straight to the calibrators (no server: this part measures the statistics, not the wire):
 * frozen (fitted on the first 10 minutes, then kept), cumulative (every frame kept, refitted) and
 * rolling (a 10-minute window, refitted), each against a fresh fit on the last 10 minutes of stimuli
 * with the neurons as they respond at that moment; test SSIML of each over simulated time, plotted
 * to <out>/calibrate-drift.svg. After the ROI change the refitted decoders serve the kept units with
 * their earlier calibration until the new unit set's own fit is better.
 *
 * --quick: a 500-neuron animal, refiner animals of 400 and 600 neurons, a 90 s refiner budget; the
 * calibration is streamed at 20 frames per second, 10x faster than its simulated 2 per second
 * (minutes below are simulated minutes: 120 frames each), and refits every 0.5 s of wall time
 * (5 simulated seconds). The drift part simulates 40 minutes.
 * Full: a new 8,600-neuron animal (3,000 train trials), three refiner animals (5,000 and 8,600
 * neurons: a refiner learns the errors of ridge images as good as the target's), real time (10+ minutes of streaming, refits every 5 s), an hour of drift.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, relative, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { DecoderConnection, type FrameAck } from '../clients/lib/index.js';
import { columnMeanStd } from '../src/common/stats.js';
import { responseScaleVector } from '../src/common/scaling.js';
import { DEFAULT_PREPROCESS, prepareDataset, readRawSplit, type PreparedData, type RawSplit } from '../src/datasets/preprocess.js';
import { SensoriumDataset } from '../src/datasets/sensorium.js';
import { buildRidgeGraph } from '../src/models/architectures/ridge.js';
import { loadBundle } from '../src/models/bundle.js';
import { readModel } from '../src/models/onnx/index.js';
import { Calibrator, isHeldOut, runGraph } from '../src/training/calibrate/calibrator.js';
import { composeRidgeRefiner, loadRefiner, saveRefiner, trainTransferRefiner, type TransferRefiner } from '../src/training/calibrate/refiner.js';
import type { CalibratedRidge } from '../src/training/calibrate/solve.js';
import type { Forgetting } from '../src/training/calibrate/statistics.js';
import { refinerAnimal } from '../src/training/calibrate/train-refiner.js';
import { DriftSimulator } from '../src/training/data/drift-sim.js';
import { SYNTH_PRESETS, synthesize, type SynthConfig } from '../src/training/data/synth.js';
import { scoreImages } from '../src/training/eval/metrics/image-metrics.js';
import { fitRidge } from '../src/training/ridge/ridge.js';

const { values: args } = parseArgs({ options: { quick: { type: 'boolean', default: false }, out: { type: 'string' } } });
const quick = args.quick!;
const out = resolve(args.out ?? `.cache/bench-calibrate/${quick ? 'quick' : 'full'}`);
mkdirSync(out, { recursive: true });
const [H, W] = DEFAULT_PREPROCESS.imageSize;
const P = H * W;
const RATE_HZ = 2;
const SPEEDUP = quick ? 10 : 1;
const MINUTES = [1, 2, 5, 10];
const log = (s: string): void => console.log(s);
const t00 = Date.now();
log(`load average at start: ${loadavg().map((v) => v.toFixed(1)).join(' ')} (${cpus().length} cores; other jobs share this machine)`);

const small = SYNTH_PRESETS.small;
const preset = (neurons: number, seed: number, complexFraction: number, train: number): SynthConfig => ({
  ...small,
  trainTrials: train,
  validationTrials: quick ? 100 : small.validationTrials,
  testImages: 20,
  repeats: quick ? 2 : small.repeats,
  simulator: { ...small.simulator, neurons, seed, complexFraction },
});
const target = quick ? preset(500, 301, 0.5, 1350) : preset(8600, 301, 0.5, 3000);
const donors = quick ? [preset(400, 302, 0.3, 600), preset(600, 303, 0.8, 600)] : [preset(8600, 302, 0.3, 1500), preset(8600, 303, 0.8, 1500), preset(5000, 304, 0.6, 1500)];

/** A simulated animal's folder, named by its settings (a rerun with other settings synthesizes anew). */
const animalName = (role: string, cfg: SynthConfig): string => `${role}-${cfg.simulator.neurons}n-s${cfg.simulator.seed}-t${cfg.trainTrials}`;

async function dataset(name: string, cfg: SynthConfig): Promise<string> {
  const dir = join(out, name);
  if (!existsSync(join(dir, 'meta'))) {
    log(`synth ${name}: ${cfg.simulator.neurons} neurons, ${cfg.trainTrials} train trials, seed ${cfg.simulator.seed}, ${Math.round(cfg.simulator.complexFraction * 100)}% complex cells`);
    await synthesize(dir, cfg, { quiet: true, force: true });
  } else log(`${name}: ${relative(process.cwd(), dir)} (synthesized by an earlier run with these settings: ${cfg.simulator.neurons} neurons, seed ${cfg.simulator.seed})`);
  return dir;
}

/** Test-tier SSIML of a ridge (and of it + the refiner) on the target's test responses. */
async function testScores(ridge: Pick<CalibratedRidge, 'weights' | 'bias' | 'stdScale'>, test: RawSplit, refiner: TransferRefiner): Promise<{ ridge: number; refined: number }> {
  const N = ridge.stdScale.length;
  const held = { count: test.imageIds.length, raw: test.responses, images: test.images };
  const plain = await runGraph(buildRidgeGraph(ridge.weights, ridge.bias, N, H, W), held, ridge.stdScale, H, W);
  const refined = await runGraph(composeRidgeRefiner({ weights: ridge.weights, bias: ridge.bias, neurons: N }, refiner), held, ridge.stdScale, H, W);
  return { ridge: scoreImages(test.images, plain, held.count, H, W).ssiml, refined: scoreImages(test.images, refined, held.count, H, W).ssiml };
}

/** The offline ridge (training/ridge: validation-tier alpha) on these train rows of the raw split. */
async function offlineRidge(train: RawSplit, rows: number[], validation: RawSplit, N: number): Promise<Pick<CalibratedRidge, 'weights' | 'bias' | 'stdScale'>> {
  const n = rows.length;
  const x = new Float32Array(n * N);
  const y = new Float32Array(n * P);
  rows.forEach((r, i) => {
    x.set(train.responses.subarray(r * N, (r + 1) * N), i * N);
    y.set(train.images.subarray(r * P, (r + 1) * P), i * P);
  });
  const stdScale = responseScaleVector(columnMeanStd(x, n, N).std, 'brainreader');
  let sum = 0;
  let sq = 0;
  for (const v of y) ((sum += v), (sq += v * v));
  const mean = sum / y.length;
  const std = Math.sqrt(sq / y.length - mean * mean);
  const norm = (resp: Float32Array, img: Float32Array, count: number) => ({
    tier: '',
    count,
    responses: Float32Array.from(resp, (v, k) => v * stdScale[k % N]),
    images: Float32Array.from(img, (v) => (v - mean) / std),
    imageIds: [],
    trials: [],
  });
  const data = { neurons: N, unitIds: [], height: H, width: W, train: norm(x, y, n), validation: norm(validation.responses, validation.images, validation.imageIds.length) } as unknown as PreparedData;
  const fit = await fitRidge(data);
  return { weights: fit.weights, bias: fit.bias, stdScale };
}

// --- 1. animals and the transferred refiner ---
const targetDir = await dataset(animalName('target', target), target);
const donorDirs: string[] = [];
for (let k = 0; k < donors.length; k++) donorDirs.push(await dataset(animalName(`donor-${k + 1}`, donors[k]), donors[k]));
const refinerDir = join(out, `refiner-${donors.map((d) => `${d.simulator.neurons}n-s${d.simulator.seed}`).join('-')}`);
let refiner: TransferRefiner;
if (existsSync(join(refinerDir, 'refiner.json'))) {
  refiner = loadRefiner(refinerDir);
  log(`refiner: loaded from ${relative(process.cwd(), refinerDir)} (trained by an earlier run: ${refiner.steps} steps on ${refiner.animals.join(', ')})`);
} else {
  const animals = [];
  for (const d of donorDirs) {
    const { data: _d, ...a } = await refinerAnimal(d);
    animals.push(a);
  }
  const t = Date.now();
  refiner = await trainTransferRefiner({ animals, height: H, width: W, steps: 100_000, budgetSeconds: quick ? 90 : 300, log });
  log(`refiner: ${refiner.steps} steps in ${((Date.now() - t) / 1000).toFixed(0)} s on ${refiner.animals.join(', ')}`);
  saveRefiner(refinerDir, refiner);
}

const ds = SensoriumDataset.open(targetDir);
const N = ds.neurons;
const train = readRawSplit(ds, 'train', { average: false, imageSize: [H, W] });
const validation = readRawSplit(ds, 'validation', { average: false, imageSize: [H, W] });
const test = readRawSplit(ds, 'test', { average: true, imageSize: [H, W] });
const trainCount = train.imageIds.length;
const frames = Math.min(trainCount, MINUTES[MINUTES.length - 1] * 60 * RATE_HZ);
log(`target animal: ${N} neurons (no decoder has seen it), ${trainCount} train trials, ${test.imageIds.length} test images; ${frames} calibration frames at ${RATE_HZ}/s simulated, streamed ${SPEEDUP}x faster`);

// --- 2. live calibration through a real server ---
// Three processes, as on a rig: `cortexcast serve`, `cortexcast calibrate` and the rig (this one).
const token = 'bench-calibrate-token-0123456789abcdef';
const work = mkdtempSync(join(tmpdir(), 'cc-bench-cal-'));
const modelsDir = join(work, 'models');
mkdirSync(modelsDir);
// Reloads unspaced, so that the measured delay is calibrate's and the server's, not the spacing policy's.
writeFileSync(join(work, 'server.json'), JSON.stringify({ framePolicy: 'fifo', limits: { minReloadIntervalMs: 0 } }));
const [grpcPort, httpPort] = [await freePort(), await freePort()];
const env = { ...process.env, CORTEXCAST_TOKEN: token };
const cli = (args: string[]): ChildProcess => spawn(process.execPath, [resolve('bin/cortexcast.js'), ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
const serverProc = cli(['serve', '--models-dir', modelsDir, '--grpc-port', String(grpcPort), '--http-port', String(httpPort), '--config', join(work, 'server.json')]);
await lineMatching(serverProc, /"msg":"serving"/, 60_000);
interface Served {
  sentAt: number;
  wallAt: number;
  toServing: number;
  reload: number;
  fit: number;
  frames: number;
  refit: number;
  model: Uint8Array;
  stdScale: Float32Array;
}
const served: Served[] = [];
let sent = 0;
let lastFit = NaN;
const calProc = cli(['calibrate', '--name', 'new-mouse', '--out', modelsDir, '--server', `http://127.0.0.1:${httpPort}`, '--grpc', `127.0.0.1:${grpcPort}`, '--every', quick ? '0.5' : '5', '--refiner', refinerDir]);
onLines(calProc, (line) => {
  const refit = /refit \d+ .* in ([\d.]+) s/.exec(line);
  if (refit) lastFit = Number(refit[1]);
  const live = /serving ([\d.]+) s after its newest frame \(reload ([\d.]+) s\)/.exec(line);
  if (live) {
    // The bundle that went live (a newer refit may replace it within the next refit's time: its refit number says which).
    const b = loadBundle(join(modelsDir, 'new-mouse'));
    const v = b.manifest.metrics.validation ?? {};
    served.push({ sentAt: sent, wallAt: Date.now(), toServing: Number(live[1]), reload: Number(live[2]), fit: lastFit, frames: v.calibration_frames, refit: v.calibration_refits, model: b.model, stdScale: b.stdScale });
  }
  // calibrate's own log: its refits (held-out learning curve) and when each bundle went live.
  if (/refit|serving|CC_ERR|failed|unit set/.test(line)) log(`  [calibrate process, ${sent} frames sent] ${line.replace(/^calibrate: /, '')}`);
});
await lineMatching(calProc, /subscribed/, 60_000);
const conn = new DecoderConnection(`127.0.0.1:${grpcPort}`, { token });
const acks = new Map<number, FrameAck>();
const sentWall: number[] = [];
const stream = conn.openStream((a) => acks.set(Number(a.sequence), a));
const t0 = Date.now();
const periodMs = 1000 / (RATE_HZ * SPEEDUP);
const [imgH, imgW] = ds.imageShape;
const trainTrials = ds.indices('train');
for (let i = 0; i < frames; i++) {
  const due = t0 + i * periodMs;
  if (due > Date.now()) await new Promise((r) => setTimeout(r, due - Date.now()));
  const shown = ds.trial(trainTrials[i]).image;
  sentWall.push(Date.now());
  if (!stream.send({ streamId: 'rig', model: 'new-mouse', sequence: i + 1, responses: train.responses.subarray(i * N, (i + 1) * N), imageId: train.imageIds[i], stimulus: { width: imgW, height: imgH, pixels: Uint8Array.from(shown) } })) await stream.drained();
  sent = i + 1;
}
// Let the last refit land.
const lastServed = (): number => served[served.length - 1]?.sentAt ?? 0;
for (let k = 0; k < 150 && lastServed() < frames; k++) await new Promise((r) => setTimeout(r, 200));
stream.end();
await stream.done.catch(() => undefined);
conn.close();
calProc.kill('SIGINT');
await new Promise((r) => calProc.once('exit', r));
serverProc.kill('SIGTERM');
await new Promise((r) => serverProc.once('exit', r));

// --- 3. the table ---
const offlineFull = await offlineRidge(train, Array.from({ length: trainCount }, (_, i) => i), validation, N);
const full = await testScores(offlineFull, test, refiner);
log('');
log(`minute  frames  live bundle (train frames)  live ridge  +refiner | (a) offline same trials  +refiner | (b) offline full tier (${trainCount})  +refiner`);
const ratios: string[] = [];
for (const m of MINUTES) {
  const at = m * 60 * RATE_HZ;
  if (at > frames) break;
  const bundle = [...served].reverse().find((s) => s.sentAt <= at);
  if (!bundle) {
    log(`${String(m).padStart(6)}  ${String(at).padStart(6)}  no bundle served yet`);
    ratios.push(`live/offline SSIML n/a  (minute ${m}: no bundle was serving yet; the first went live after ${served[0]?.sentAt ?? '-'} frames)`);
    continue;
  }
  const liveScores = await servedScores(bundle, test);
  // The live fit's train trials: the first frames it had (its newest frame's index), minus the held-out ids.
  const used = Array.from({ length: trainCount }, (_, i) => i).filter((i) => !isHeldOut(train.imageIds[i], 0.1)).slice(0, bundle.frames);
  const same = await testScores(await offlineRidge(train, used, validation, N), test, refiner);
  const f = (v: number): string => v.toFixed(3).padStart(8);
  log(`${String(m).padStart(6)}  ${String(at).padStart(6)}  ${`refit ${bundle.refit}, ${bundle.frames}`.padStart(26)}  ${f(liveScores.ridge)}  ${f(liveScores.refined)} | ${f(same.ridge).padStart(23)}  ${f(same.refined)} | ${f(full.ridge).padStart(27)}  ${f(full.refined)}`);
  ratios.push(`live/offline SSIML ${(liveScores.ridge / same.ridge).toFixed(3)}  (minute ${m}; with the refiner on both: ${(liveScores.refined / same.refined).toFixed(3)}; refiner gain on this unseen animal, live: SSIML x${(liveScores.refined / liveScores.ridge).toFixed(3)})`);
}
log('');
for (const r of ratios) log(r);
const lat = served.map((s) => s.toServing).sort((a, b) => a - b);
const reloads = served.map((s) => s.reload).sort((a, b) => a - b);
const q = (a: number[], p: number): number => a[Math.min(a.length - 1, Math.floor(p * a.length))];
log('');
log(`bundles served: ${served.length}; newest frame -> bundle serving: median ${q(lat, 0.5).toFixed(2)} s, max ${lat[lat.length - 1].toFixed(2)} s (wall; refit median ${q(served.map((s) => s.fit).sort((a, b) => a - b), 0.5).toFixed(2)} s, reload median ${q(reloads, 0.5).toFixed(2)} s)`);
const firstDecoded = Math.min(...[...acks.values()].filter((a) => a.status === 'DECODED').map((a) => Number(a.sequence)));
const windows = served.map((s) => [s.wallAt - s.reload * 1000, s.wallAt] as const);
let during = 0;
let outside = 0;
const reasons = new Map<string, number>();
for (let seq = firstDecoded; seq <= frames; seq++) {
  const a = acks.get(seq);
  if (a?.status === 'DECODED') continue;
  const why = `${a?.status ?? 'no ack'} ${(a?.reason ?? '').split(':')[0]}`.trim();
  reasons.set(why, (reasons.get(why) ?? 0) + 1);
  const at = sentWall[seq - 1];
  if (windows.some(([s, e]) => at >= s && at <= e)) during++;
  else outside++;
}
const finals = [...acks.values()].length;
log(`acks: ${finals} of ${frames} frames; before the first bundle served: ${firstDecoded - 1} frames refused (unknown model, as expected); after it: ${during} not decoded during reloads, ${outside} outside reloads${reasons.size ? ` (${[...reasons].map(([k, v]) => `${v} ${k}`).join(', ')})` : ''}`);

// --- 4. drift: rolling vs cumulative vs frozen, against a fresh fit ---
const driftMinutes = quick ? 40 : 60;
const switchMinute = quick ? 25 : 40;
const windowMinutes = 10;
const reserve = Math.round(0.1 * N);
const drift = new DriftSimulator(ds.unitIds, { gainSdPerHour: 0.6, stepSeconds: 10, switchAt: switchMinute * 60, lostFraction: 0.2, reserveUnits: reserve, newIdOffset: 1_000_000, seed: 5 });
const driftOut = join(work, 'drift');
const calibrator = (name: string, forgetting: Forgetting): Calibrator => new Calibrator({ name, modelsDir: driftOut, height: H, width: W, forgetting, write: false });
const cals = { cumulative: calibrator('cumulative', { kind: 'none' }), rolling: calibrator('rolling', { kind: 'window', seconds: windowMinutes * 60 }) };
type DriftPoint = { minute: number; frozen: number; cumulative: number; rolling: number; fresh: number };
const curve: DriftPoint[] = [];
const evalEvery = quick ? 2.5 : 5;
const driftFrames = driftMinutes * 60 * RATE_HZ;
const windowFrames = windowMinutes * 60 * RATE_HZ;
/** The decoder calibrated over the first window, then never refitted; lost units read as their calibration mean. */
let frozen: { ridge: CalibratedRidge; unitIds: number[]; mean: Float32Array } | undefined;
const frozenSum = new Float64Array(N);
log('');
log(
  `drift: ${driftMinutes} simulated minutes at ${RATE_HZ}/s (the ${trainCount} train trials reused in order), gains drifting (log-gain sd 0.6 per hour), at minute ${switchMinute} 20% of the ROIs lost and ${reserve} new ones found. ` +
    `frozen = fitted on the first ${windowMinutes} minutes, then kept; cumulative = every frame kept, refitted; rolling = ${windowMinutes}-minute window, refitted; fresh = a new fit on the last ${windowMinutes} minutes of stimuli as the neurons respond now (the reference)`,
);
const driftT0 = Date.now();
for (let i = 0; i < driftFrames; i++) {
  const t = i / RATE_HZ;
  const row = i % trainCount;
  const f = drift.frame(train.responses.subarray(row * N, (row + 1) * N), t);
  const image = train.images.subarray(row * P, (row + 1) * P);
  if (i < windowFrames) f.responses.forEach((v, k) => (frozenSum[k] += v));
  for (const c of Object.values(cals)) c.add({ raw: f.responses, image, t, imageId: train.imageIds[row] + Math.floor(i / trainCount) * 1_000_000, unitIds: f.unitIds });
  if ((i + 1) % Math.round(evalEvery * 60 * RATE_HZ) !== 0) continue;
  const point: DriftPoint = { minute: (i + 1) / RATE_HZ / 60, frozen: NaN, cumulative: NaN, rolling: NaN, fresh: NaN };
  const cols = drift.visible(t);
  const g = drift.gains(t);
  const ids = f.unitIds;
  const testRaw = new Float32Array(test.imageIds.length * cols.length);
  for (let r = 0; r < test.imageIds.length; r++) cols.forEach((c, k) => (testRaw[r * cols.length + k] = test.responses[r * N + c] * g[c]));
  const score = async (ridge: CalibratedRidge, raw: Float32Array, neurons: number): Promise<number> => {
    const plain = await runGraph(buildRidgeGraph(ridge.weights, ridge.bias, neurons, H, W), { count: test.imageIds.length, raw, images: test.images }, ridge.stdScale, H, W);
    return scoreImages(test.images, plain, test.imageIds.length, H, W).ssiml;
  };
  for (const [name, c] of Object.entries(cals) as [keyof typeof cals, Calibrator][]) {
    const r = await c.refit();
    if (!r) continue;
    point[name] = await score(r.ridge, testRaw, cols.length);
    if (name === 'rolling' && !frozen && i + 1 >= windowFrames) frozen = { ridge: r.ridge, unitIds: [...ids], mean: Float32Array.from(frozenSum, (v) => v / windowFrames) };
  }
  if (frozen) {
    const now = new Map(ids.map((id, k) => [id, k]));
    const raw = new Float32Array(test.imageIds.length * frozen.unitIds.length);
    for (let r = 0; r < test.imageIds.length; r++)
      frozen.unitIds.forEach((id, k) => {
        const at = now.get(id);
        raw[r * frozen!.unitIds.length + k] = at === undefined ? frozen!.mean[k] : testRaw[r * cols.length + at];
      });
    point.frozen = await score(frozen.ridge, raw, frozen.unitIds.length);
  }
  // The reference: the last window's stimuli with the neurons as they respond now.
  const fresh = calibrator('fresh', { kind: 'none' });
  for (let j = Math.max(0, i + 1 - windowFrames); j <= i; j++) {
    const rj = j % trainCount;
    const fj = drift.frame(train.responses.subarray(rj * N, (rj + 1) * N), t);
    fresh.add({ raw: fj.responses, image: train.images.subarray(rj * P, (rj + 1) * P), t: j / RATE_HZ, imageId: train.imageIds[rj] + Math.floor(j / trainCount) * 1_000_000, unitIds: fj.unitIds });
  }
  const fr = await fresh.refit();
  if (fr) point.fresh = await score(fr.ridge, testRaw, cols.length);
  curve.push(point);
  const rel = (v: number): string => (Number.isFinite(v) ? (v / point.fresh).toFixed(3) : '  -  ');
  log(
    `  minute ${point.minute.toFixed(1).padStart(5)}: test SSIML frozen ${point.frozen.toFixed(3)}  cumulative ${point.cumulative.toFixed(3)}  rolling ${point.rolling.toFixed(3)}  fresh fit ${point.fresh.toFixed(3)}` +
      `  | over fresh: frozen ${rel(point.frozen)} cumulative ${rel(point.cumulative)} rolling ${rel(point.rolling)}  (${((Date.now() - driftT0) / 1000).toFixed(0)} s)`,
  );
}
const after = curve.filter((p) => p.minute >= windowMinutes && Number.isFinite(p.fresh));
const worst = (k: 'frozen' | 'cumulative' | 'rolling'): number => Math.max(...after.map((p) => p[k] / p.fresh).filter(Number.isFinite));
log(`drift, worst over fresh fit from minute ${windowMinutes} on: rolling x${worst('rolling').toFixed(3)}, cumulative x${worst('cumulative').toFixed(3)}, frozen x${worst('frozen').toFixed(3)} (target: rolling within x1.05)`);
const svg = driftSvg(curve, switchMinute);
writeFileSync(join(out, 'calibrate-drift.svg'), svg);
log(`drift figure: ${relative(process.cwd(), join(out, 'calibrate-drift.svg'))}`);
log(`total ${((Date.now() - t00) / 1000).toFixed(0)} s; load average at the end: ${loadavg().map((v) => v.toFixed(1)).join(' ')}`);
process.exit(0);

/** Test SSIML of a served bundle as it is (ridge + refiner) and of its ridge alone (the graph's [neurons, pixels] MatMul weights). */
async function servedScores(b: Served, split: RawSplit): Promise<{ ridge: number; refined: number }> {
  const count = split.imageIds.length;
  const held = { count, raw: split.responses, images: split.images };
  const { graph } = readModel(b.model);
  const n = b.stdScale.length;
  let weights: Float32Array | undefined;
  let bias: Float32Array | undefined;
  for (const { tensor: t } of graph.initializers.values()) {
    if (t.dims.length === 2 && t.dims[0] === n && t.dims[1] === P) weights = t.data as Float32Array;
    if (t.dims.length === 1 && t.dims[0] === P) bias = t.data as Float32Array;
  }
  if (!weights || !bias) throw new Error('the served bundle has no ridge MatMul');
  const plain = await runGraph(buildRidgeGraph(weights, bias, n, H, W), held, b.stdScale, H, W);
  const refined = await runGraph(graph, held, b.stdScale, H, W);
  return { ridge: scoreImages(split.images, plain, count, H, W).ssiml, refined: scoreImages(split.images, refined, count, H, W).ssiml };
}

function freePort(): Promise<number> {
  return new Promise((res) => {
    const s = createNetServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as AddressInfo;
      s.close(() => res(port));
    });
  });
}

function onLines(p: ChildProcess, f: (line: string) => void): void {
  for (const s of [p.stdout!, p.stderr!]) {
    let buf = '';
    s.on('data', (c: Buffer) => {
      buf += c.toString();
      let k;
      while ((k = buf.indexOf('\n')) >= 0) {
        f(buf.slice(0, k));
        buf = buf.slice(k + 1);
      }
    });
  }
}

function lineMatching(p: ChildProcess, re: RegExp, ms: number): Promise<void> {
  return new Promise((res, rej) => {
    const t = setTimeout(() => rej(new Error(`no line matching ${re} within ${ms} ms`)), ms);
    onLines(p, (l) => re.test(l) && (clearTimeout(t), res()));
    p.once('exit', (code) => rej(new Error(`process exited (${code}) before a line matching ${re}`)));
  });
}

/** Test SSIML of the decoders over simulated minutes, the ROI change marked. */
function driftSvg(points: { minute: number; frozen: number; cumulative: number; rolling: number; fresh: number }[], switchAt: number): string {
  const w = 680;
  const h = 380;
  const m = { l: 60, r: 170, t: 40, b: 50 };
  const series = [
    { key: 'frozen', colour: '#c0504d', label: 'frozen after 10 min' },
    { key: 'cumulative', colour: '#e59b2e', label: 'cumulative (all frames)' },
    { key: 'rolling', colour: '#3b6ea8', label: 'rolling (10-min window)' },
    { key: 'fresh', colour: '#555555', label: 'fresh fit (reference)', dash: '5 4' },
  ] as const;
  const xs = points.map((p) => p.minute);
  const ys = points.flatMap((p) => series.map((s) => p[s.key])).filter(Number.isFinite);
  const [x0, x1] = [0, Math.max(...xs)];
  const [y0, y1] = [Math.min(...ys) - 0.01, Math.max(...ys) + 0.01];
  const X = (v: number): number => m.l + ((v - x0) / (x1 - x0)) * (w - m.l - m.r);
  const Y = (v: number): number => h - m.b - ((v - y0) / (y1 - y0)) * (h - m.t - m.b);
  const line = (k: (typeof series)[number]): string =>
    `<polyline fill="none" stroke="${k.colour}" stroke-width="2"${'dash' in k ? ` stroke-dasharray="${k.dash}"` : ''} points="${points
      .filter((p) => Number.isFinite(p[k.key]))
      .map((p) => `${X(p.minute).toFixed(1)},${Y(p[k.key]).toFixed(1)}`)
      .join(' ')}"/>`;
  const yTicks = Array.from({ length: 5 }, (_, i) => y0 + ((y1 - y0) * i) / 4);
  const xTicks = Array.from({ length: Math.floor(x1 / 10) + 1 }, (_, i) => i * 10);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${w}" height="${h}" font-family="sans-serif" font-size="12">
<rect width="${w}" height="${h}" fill="white"/>
<text x="${(w - m.r + m.l) / 2}" y="20" text-anchor="middle" font-size="14">Calibration under drift (test SSIML of each decoder)</text>
<line x1="${m.l}" y1="${h - m.b}" x2="${w - m.r}" y2="${h - m.b}" stroke="black"/><line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${h - m.b}" stroke="black"/>
${xTicks.map((t) => `<text x="${X(t)}" y="${h - m.b + 16}" text-anchor="middle">${t}</text>`).join('')}
${yTicks.map((t) => `<text x="${m.l - 6}" y="${Y(t) + 4}" text-anchor="end">${t.toFixed(3)}</text>`).join('')}
<text x="${(m.l + w - m.r) / 2}" y="${h - 12}" text-anchor="middle">simulated minutes of recording</text>
<text transform="translate(16 ${(m.t + h - m.b) / 2}) rotate(-90)" text-anchor="middle">test SSIML (lower is better)</text>
<line x1="${X(switchAt)}" y1="${m.t}" x2="${X(switchAt)}" y2="${h - m.b}" stroke="#999" stroke-dasharray="4 3"/>
<text x="${X(switchAt) + 4}" y="${m.t + 12}" fill="#666">ROIs lost / found</text>
${series.map(line).join('')}
${series.map((k, i) => `<line x1="${w - m.r + 12}" y1="${m.t + 20 + 20 * i}" x2="${w - m.r + 36}" y2="${m.t + 20 + 20 * i}" stroke="${k.colour}" stroke-width="2"${'dash' in k ? ` stroke-dasharray="${k.dash}"` : ''}/><text x="${w - m.r + 42}" y="${m.t + 24 + 20 * i}">${k.label}</text>`).join('')}
</svg>
`;
}
