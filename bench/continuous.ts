/**
 * npm run bench:continuous -- [--quick] [--preset tiny|small|default] [--out DIR] [--speed 8]
 *   [--log docs/bench/continuous-window-sweep.txt] [--plot docs/bench/continuous-window-sweep.svg]
 *
 * How decoding quality on a continuous stream depends on the server's response window. A simulated
 * continuous recording (calcium-like traces at the imaging rate, stimuli with blanks between them)
 * is written as NWB; a ridge decoder is trained on trial means cut from it with the recording's
 * window (its bundle records that window). Then:
 *
 *  - through a real server (in this process, fifo frame policy so that every window is decoded): the
 *    recording is replayed frame by frame with `replayRecording`, once with the manifest's window and
 *    once with a config override of one frame (what a server without windows would do); every frame
 *    must get one final ack, and the decoded images must equal the offline ones below;
 *  - offline, through the server's own window code (StreamWindow, then the bundle's scaling and ONNX
 *    graph): window length swept at the training lag and lag swept at the training length.
 *
 * Quality is scored on held-out presentations (validation and test images): the window that ends
 * lag + length - 1 frames after the presentation's onset frame against that presentation's image,
 * SSIM loss and PixCorr, as ratios against the training window measured in the same run (SSIM loss:
 * below 1 is better; PixCorr: above 1 is better). Prints a table, writes it to --log and the sweep
 * as an SVG plot to --plot. --quick: the tiny preset, a shorter sweep (a few minutes on two cores).
 * --train-window LENGTH/LAG trains the decoder on another window than the recording's default one.
 */
import { writeFileAtomic } from '../src/common/atomic-file.js';
import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { subscribe } from '../clients/lib/index.js';
import { presentationPerFrame, replayRecording, type ContinuousReplayStats } from '../clients/replay/continuous.js';
import { configureNwbReading, loadNwbSupport } from '../src/datasets/dataset-source.js';
import { resizeArea } from '../src/datasets/image-ops.js';
import { readNwbRecording } from '../src/datasets/nwb-read.js';
import type { ContinuousRecording, ResponseWindow } from '../src/datasets/recording.js';
import { cutTrials, onsetFrame } from '../src/datasets/trials.js';
import { applyResponseTransform, loadBundle, type DecoderBundle } from '../src/models/bundle.js';
import { DecoderRunner } from '../src/models/decoder-runner.js';
import { createSession } from '../src/models/ort.js';
import { loadServerConfig } from '../src/server/config.js';
import { StreamWindow } from '../src/server/response-window.js';
import { CortexcastServer } from '../src/server/server.js';
import { scoreImages } from '../src/training/eval/metrics/image-metrics.js';
import { DEFAULT_CONTINUOUS, synthesizeContinuous } from '../src/training/data/continuous-sim.js';
import { SYNTH_PRESETS } from '../src/training/data/synth.js';
import { trainRidge } from '../src/training/ridge/train-ridge.js';
import { sweepSvg, type SweepPoint } from './continuous-plot.js';

const { values: a } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    preset: { type: 'string' },
    out: { type: 'string' },
    speed: { type: 'string', default: '8' },
    log: { type: 'string' },
    plot: { type: 'string' },
    'train-window': { type: 'string' },
  },
});
const repo = fileURLToPath(new URL('..', import.meta.url));
const preset = (a.preset ?? (a.quick ? 'tiny' : 'small')) as 'tiny' | 'small' | 'default';
const out = resolve(a.out ?? join(repo, '.cache', `bench-continuous-${preset}`));
const speed = Number(a.speed);
const logFile = a.log ? resolve(a.log) : undefined;
/** Train on another window than the recording's default (LENGTH/LAG in frames): does the peak follow it? */
const trainWindow = a['train-window']?.split('/').map(Number);
if (trainWindow && !(trainWindow.length === 2 && Number.isInteger(trainWindow[0]) && trainWindow[0] >= 1 && Number.isInteger(trainWindow[1]) && trainWindow[1] >= 0))
  throw new Error(`--train-window ${a['train-window']}: expected LENGTH/LAG in frames, e.g. 15/2`);
const plotFile = resolve(a.plot ?? join(repo, 'docs', 'bench', 'continuous-window-sweep.svg'));
const lines: string[] = [];
const say = (s = ''): void => {
  console.log(s);
  lines.push(s);
};
const t0 = performance.now();
const elapsed = (): string => `${((performance.now() - t0) / 1000).toFixed(0)} s`;

/** Held-out presentations (validation and test images of the training cut) with their onset frame. */
interface Scored {
  presentation: number;
  onset: number;
}

function heldOut(rec: ContinuousRecording, trained: ResponseWindow): Scored[] {
  const cut = cutTrials(rec, { lengthFrames: trained.lengthFrames, lagFrames: trained.lagFrames });
  const tierOf = new Map<number, string>();
  cut.templates.forEach((t, i) => tierOf.set(t, cut.tiers[i]));
  const out: Scored[] = [];
  rec.presentations.forEach((p, i) => {
    const tier = tierOf.get(p.template);
    if (tier === 'validation' || tier === 'test') out.push({ presentation: i, onset: onsetFrame(rec.frameTimes, p.start, rec.rate) });
  });
  return out.filter((s) => s.onset >= 0);
}

/** The images of the scored presentations at the decoder's output size. */
function targetImages(rec: ContinuousRecording, scored: Scored[], h: number, w: number): Float32Array {
  const out = new Float32Array(scored.length * h * w);
  scored.forEach((s, i) => {
    const t = rec.templates[rec.presentations[s.presentation].template];
    resizeArea(t.image, t.height, t.width, h, w, out.subarray(i * h * w, (i + 1) * h * w));
  });
  return out;
}

/** The frame whose window answers a presentation with onset frame k: k + lag + length - 1. */
const answerFrame = (onset: number, w: ResponseWindow): number => onset + w.lagFrames + w.lengthFrames - 1;

/**
 * Offline, through the server's window code: every frame enters a StreamWindow (with what was on
 * screen), the windows ending at the scored frames are scaled like the scheduler scales them and run
 * through the bundle's graph. Also checks that the window names the presentation's image.
 */
async function offline(rec: ContinuousRecording, b: DecoderBundle, runner: DecoderRunner, scored: Scored[], w: ResponseWindow): Promise<{ values: Float32Array; rows: number[]; means: Float32Array; misattributed: number }> {
  const shownAt = presentationPerFrame(rec);
  const wanted = new Map<number, number[]>();
  scored.forEach((s, i) => {
    const t = answerFrame(s.onset, w);
    if (t < rec.frames) wanted.set(t, [...(wanted.get(t) ?? []), i]);
  });
  const sw = new StreamWindow('offline', rec.units, w);
  const n = rec.units;
  const inputs = new Float32Array(scored.length * n);
  const means = new Float32Array(scored.length * n);
  const rows: number[] = [];
  let misattributed = 0;
  for (let t = 0; t < rec.frames; t++) {
    const p = shownAt[t];
    const imageId = p >= 0 ? rec.templates[rec.presentations[p].template].imageId || undefined : undefined;
    const step = sw.push(rec.traces.subarray(t * n, (t + 1) * n), imageId, undefined);
    const which = wanted.get(t);
    if (!which || step.kind !== 'ready') continue;
    for (const i of which) {
      const want = rec.templates[rec.presentations[scored[i].presentation].template].imageId || undefined;
      if (step.screen?.imageId !== want) misattributed++;
      means.set(step.responses, rows.length * n);
      applyResponseTransform(step.responses, b.stdScale, b.manifest.input.transform, inputs.subarray(rows.length * n, (rows.length + 1) * n));
      rows.push(i);
    }
  }
  const P = b.manifest.output.height * b.manifest.output.width;
  const values = new Float32Array(rows.length * P);
  const batch = 64;
  for (let r = 0; r < rows.length; r += batch) {
    const m = Math.min(batch, rows.length - r);
    values.set(await runner.run(inputs.slice(r * n, (r + m) * n), m), r * P);
  }
  return { values, rows, means: means.subarray(0, rows.length * n), misattributed };
}

function score(rec: ContinuousRecording, b: DecoderBundle, scored: Scored[], values: Float32Array, rows: number[]): { ssiml: number; pixcorr: number; count: number } {
  const { height: h, width: w } = b.manifest.output;
  const targets = targetImages(rec, rows.map((i) => scored[i]), h, w);
  const s = scoreImages(targets, values, rows.length, h, w);
  return { ssiml: s.ssiml, pixcorr: s.pixcorr, count: rows.length };
}

/** Replay through a real server under `model`; the decoded images of the scored frames, and the ack ledger. */
async function throughServer(server: CortexcastServer, rec: ContinuousRecording, model: string, w: ResponseWindow, scored: Scored[]): Promise<{ stats: ContinuousReplayStats; byRow: Map<number, Float32Array>; acksPerFrame: Uint8Array }> {
  const want = new Map<number, number[]>();
  scored.forEach((s, i) => {
    const t = answerFrame(s.onset, w);
    if (t < rec.frames) want.set(t, [...(want.get(t) ?? []), i]);
  });
  const stream = `bench-${model}`;
  const sub = subscribe(`http://127.0.0.1:${server.httpPort}`, { stream, model, float: true });
  await sub.hello;
  const byRow = new Map<number, Float32Array>();
  const collecting = (async () => {
    for await (const f of sub) for (const i of want.get(Number(f.seq) - 1) ?? []) byRow.set(i, f.values!);
  })();
  const acksPerFrame = new Uint8Array(rec.frames);
  const stats = await replayRecording(rec, { server: `127.0.0.1:${server.grpcPort}`, model, streamId: stream, speed, onAck: (_a, frame) => acksPerFrame[frame]++ });
  await new Promise((r) => setTimeout(r, 300));
  sub.close();
  await collecting;
  return { stats, byRow, acksPerFrame };
}

const pad = (s: string | number, n: number): string => String(s).padStart(n);


async function main(): Promise<void> {
  mkdirSync(out, { recursive: true });
  say(`# bench:continuous  preset ${preset}${a.quick ? ' (quick)' : ''}  speed ${speed}x  ${new Date().toISOString()}`);
  await loadNwbSupport();
  const nwb = join(out, 'recording.nwb');
  if (!existsSync(nwb)) await synthesizeContinuous(nwb, SYNTH_PRESETS[preset], DEFAULT_CONTINUOUS, { quiet: true });
  const rec = readNwbRecording(nwb);
  say(`recording: ${rec.frames} imaging frames at ${rec.rate.toFixed(2)} Hz (${(rec.frames / rec.rate).toFixed(0)} s), ${rec.units} neurons, ${rec.presentations.length} presentations of ${rec.templates.length} images  [${elapsed()}]`);
  const bundleDir = join(out, trainWindow ? `ridge-${trainWindow[0]}x${trainWindow[1]}` : 'ridge');
  if (trainWindow) configureNwbReading({ lengthFrames: trainWindow[0], lagFrames: trainWindow[1] });
  if (!existsSync(join(bundleDir, 'manifest.json'))) await trainRidge({ data: nwb, out: bundleDir, quiet: true, log: (s) => say(`  ${s}`) });
  const b = loadBundle(bundleDir);
  const trained = b.manifest.responseWindow;
  if (!trained) throw new Error(`${bundleDir}: the manifest records no responseWindow; the decoder must be trained from the continuous recording`);
  const ms = (f: number): string => `${Math.round((1000 * f) / rec.rate)} ms`;
  say(`decoder: ridge on trial means of ${trained.lengthFrames} frames (${ms(trained.lengthFrames)}) from ${trained.lagFrames} frames (${ms(trained.lagFrames)}) after the onset frame, validation SSIM loss ${b.manifest.metrics.validation?.ssiml?.toFixed(3) ?? '-'}  [${elapsed()}]`);
  const scored = heldOut(rec, trained);
  say(`scored: ${scored.length} held-out presentations (validation and test images)`);
  const { session } = await createSession(b.model);
  const runner = new DecoderRunner(session, b.manifest);
  {
    // The live window at the training window reproduces the trial means the decoder was trained on.
    const cut = cutTrials(rec, { lengthFrames: trained.lengthFrames, lagFrames: trained.lagFrames });
    const rowOfOnset = new Map<number, number>();
    cut.onsets.forEach((t, i) => rowOfOnset.set(t, i));
    const off = await offline(rec, b, runner, scored, trained);
    let maxDiff = 0;
    let compared = 0;
    off.rows.forEach((i, k) => {
      const row = rowOfOnset.get(rec.presentations[scored[i].presentation].start);
      if (row === undefined) return;
      compared++;
      for (let j = 0; j < rec.units; j++) maxDiff = Math.max(maxDiff, Math.abs(off.means[k * rec.units + j] - cut.responses[row * rec.units + j]));
    });
    say(`live window means vs the trial means training cut, ${compared} presentations: largest difference ${maxDiff.toExponential(2)} (dF/F)`);
    if (!compared || maxDiff > 1e-4) process.exitCode = 1;
  }

  // Real server: the manifest's window, and a config override of one frame.
  const server = await new CortexcastServer(
    loadServerConfig({
      flags: {
        grpcPort: 0,
        httpPort: 0,
        framePolicy: 'fifo',
        queueDepth: 1024,
        shutdownGraceMs: 1000,
        models: [
          { name: 'trained', path: bundleDir },
          { name: 'one-frame', path: bundleDir, responseWindow: { lengthFrames: 1, lagFrames: 0 } },
        ],
      },
    }),
    () => undefined,
  ).start();
  say();
  say('through a real server (replayRecording, every imaging frame streamed):');
  const serverRows: { name: string; w: ResponseWindow; s: ReturnType<typeof score>; maxDiff: number }[] = [];
  try {
    for (const [name, w] of [
      ['trained', trained],
      ['one-frame', { lengthFrames: 1, lagFrames: 0 }],
    ] as const) {
      const r = await throughServer(server, rec, name, w, scored);
      const once = r.acksPerFrame.every((n) => n === 1);
      const drops = Object.entries(r.stats.droppedBy).map(([k, v]) => `${k} ${v}`).join(', ') || 'none';
      say(`  ${name.padEnd(9)} window ${w.lengthFrames}/${w.lagFrames}: sent ${r.stats.sent}, acked ${r.stats.acked} (${once ? 'exactly one final ack per frame' : 'NOT one ack per frame'}), decoded ${r.stats.decoded}, dropped ${r.stats.dropped} (${drops}), rejected ${r.stats.rejected}, ${r.stats.elapsedS.toFixed(1)} s`);
      if (!once || r.stats.rejected) process.exitCode = 1;
      const off = await offline(rec, b, runner, scored, w);
      const P = b.manifest.output.height * b.manifest.output.width;
      let maxDiff = 0;
      const rows: number[] = [];
      const values: Float32Array[] = [];
      off.rows.forEach((i, k) => {
        const v = r.byRow.get(i);
        if (!v) return;
        rows.push(i);
        values.push(v);
        for (let j = 0; j < P; j++) maxDiff = Math.max(maxDiff, Math.abs(v[j] - off.values[k * P + j]));
      });
      const flat = new Float32Array(values.length * P);
      values.forEach((v, k) => flat.set(v, k * P));
      const s = score(rec, b, scored, flat, rows);
      serverRows.push({ name, w, s, maxDiff });
      say(`            scored ${s.count} windows: SSIM loss ${s.ssiml.toFixed(4)}, PixCorr ${s.pixcorr.toFixed(4)}; largest |server - offline| ${maxDiff.toExponential(2)}`);
      if (maxDiff > 1e-4) process.exitCode = 1;
    }
  } finally {
    await server.close();
  }

  // Offline sweep through the same window code.
  const L0 = trained.lengthFrames;
  const lag0 = trained.lagFrames;
  const lengths = [...new Set(a.quick ? [1, Math.max(1, Math.round(L0 / 2)), L0, L0 + 3, Math.round(1.5 * L0), 2 * L0] : [1, 2, 4, Math.round(L0 / 2), L0 - 2, L0, L0 + 2, L0 + 4, Math.round(1.5 * L0), 2 * L0, 3 * L0])].filter((l) => l >= 1).sort((x, y) => x - y);
  const lags = [...new Set(a.quick ? [0, lag0 - 4, lag0 - 2, lag0, lag0 + 2, lag0 + 4, lag0 + 6, lag0 + 9, lag0 + L0] : [0, 1, lag0 - 4, lag0 - 2, lag0 - 1, lag0, lag0 + 1, lag0 + 2, lag0 + 4, lag0 + 6, lag0 + 8, lag0 + 11, lag0 + L0, lag0 + 2 * L0])].filter((l) => l >= 0).sort((x, y) => x - y);
  const cache = new Map<string, SweepPoint & { count: number }>();
  const point = async (w: ResponseWindow): Promise<SweepPoint & { count: number }> => {
    const key = `${w.lengthFrames}/${w.lagFrames}`;
    let p = cache.get(key);
    if (!p) {
      const off = await offline(rec, b, runner, scored, w);
      if (off.misattributed) {
        say(`  window ${key}: ${off.misattributed} windows named the wrong stimulus`);
        process.exitCode = 1;
      }
      const s = score(rec, b, scored, off.values, off.rows);
      cache.set(key, (p = { ...w, ssiml: s.ssiml, pixcorr: s.pixcorr, count: s.count }));
    }
    return p;
  };
  const ref = await point(trained);
  const byLength: (SweepPoint & { count: number })[] = [];
  for (const l of lengths) byLength.push(await point({ lengthFrames: l, lagFrames: lag0 }));
  const byLag: (SweepPoint & { count: number })[] = [];
  for (const l of lags) byLag.push(await point({ lengthFrames: L0, lagFrames: l }));
  say();
  say(`offline sweep through the server's window code (StreamWindow + the bundle's scaling and graph)  [${elapsed()}]`);
  say(`ratios against the training window (${L0} frames, lag ${lag0}) measured in this run; SSIM loss: lower is better, PixCorr: higher is better`);
  const header = `${'length'.padStart(7)} ${'lag'.padStart(4)} ${'length ms'.padStart(10)} ${'lag ms'.padStart(7)} ${'windows'.padStart(8)} ${'SSIM loss'.padStart(10)} ${'x train'.padStart(8)} ${'PixCorr'.padStart(8)} ${'x train'.padStart(8)}`;
  const row = (p: SweepPoint & { count: number }): string =>
    `${pad(p.lengthFrames, 7)} ${pad(p.lagFrames, 4)} ${pad(ms(p.lengthFrames), 10)} ${pad(ms(p.lagFrames), 7)} ${pad(p.count, 8)} ${pad(p.ssiml.toFixed(4), 10)} ${pad((p.ssiml / ref.ssiml).toFixed(3), 8)} ${pad(p.pixcorr.toFixed(4), 8)} ${pad((p.pixcorr / ref.pixcorr).toFixed(3), 8)}` +
    (p.lengthFrames === L0 && p.lagFrames === lag0 ? '  <- training window' : '');
  say();
  say(`window length at lag ${lag0}:`);
  say(header);
  for (const p of byLength) say(row(p));
  say();
  say(`lag at window length ${L0}:`);
  say(header);
  for (const p of byLag) say(row(p));
  const best = (ps: SweepPoint[], k: 'ssiml' | 'pixcorr'): SweepPoint => ps.reduce((x, y) => (k === 'ssiml' ? (y.ssiml < x.ssiml ? y : x) : y.pixcorr > x.pixcorr ? y : x));
  say();
  say(`best SSIM loss: length ${best(byLength, 'ssiml').lengthFrames} (training ${L0}), lag ${best(byLag, 'ssiml').lagFrames} (training ${lag0}); best PixCorr: length ${best(byLength, 'pixcorr').lengthFrames}, lag ${best(byLag, 'pixcorr').lagFrames}`);
  for (const r of serverRows) say(`server, ${r.name} (${r.w.lengthFrames}/${r.w.lagFrames}): SSIM loss x train ${(r.s.ssiml / ref.ssiml).toFixed(3)}, PixCorr x train ${(r.s.pixcorr / ref.pixcorr).toFixed(3)}`);
  writeFileAtomic(plotFile, sweepSvg(byLength, byLag, trained, rec.rate, [
      `ridge decoder trained on trial means of ${L0} frames at lag ${lag0} (dashed), decoding a simulated continuous stream`,
      `(${preset} preset: ${rec.units} neurons at ${rec.rate.toFixed(0)} Hz; ${scored.length} held-out presentations; npm run bench:continuous${a.quick ? ' -- --quick' : ''})`,
    ]));
  say(`plot: ${plotFile.slice(repo.length)}  [${elapsed()}]`);
  if (logFile) writeFileAtomic(logFile, lines.join('\n') + '\n');
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(2);
});
