import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import sharp from 'sharp';
import { beforeAll, describe, expect, it } from 'vitest';
import { readNpy } from '../../src/common/npy.js';
import { GAN_PROFILES, ganGenerator } from '../../src/models/architectures/gan.js';
import { loadBundle } from '../../src/models/bundle.js';
import { newGraph, tensor } from '../../src/models/onnx/index.js';
import { createSession, runOnce } from '../../src/models/ort.js';
import { Rng } from '../../src/models/rng.js';
import { SensoriumDataset } from '../../src/datasets/sensorium.js';
import { NEURON_CORRELATION_FILE } from '../../src/training/encoder/train-encoder.js';
import { startExperiment } from '../../src/training/experiment/experiment.js';
import { neuronSubset, readPlan } from '../../src/training/experiment/plan.js';
import { readinNeurons } from '../../src/training/experiment/prepare.js';
import { runOne } from '../../src/training/experiment/run-one.js';
import { readSubmissions } from '../../src/training/experiment/slurm.js';
import { experimentProgress } from '../../src/training/experiment/status.js';
import { repoRoot } from '../helpers/paths.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

/** results.csv as records (no quoted fields are written for these experiments). */
function readCsv(file: string): Record<string, string>[] {
  const [head, ...rows] = readFileSync(file, 'utf8').trim().split('\n');
  const cols = head.split(',');
  return rows.map((r) => Object.fromEntries(r.split(',').map((v, i) => [cols[i], v])));
}

/** Every finished run's result.json, as text, by run id: what adding seeds must leave alone. */
const finishedResults = (out: string): Record<string, string> =>
  Object.fromEntries(readPlan(out).runs.flatMap((r) => (existsSync(join(out, r.dir, 'result.json')) ? [[r.id, readFileSync(join(out, r.dir, 'result.json'), 'utf8')]] : [])));

const collect = (): { log: (s: string) => void; lines: string[] } => {
  const lines: string[] = [];
  return { lines, log: (s) => void lines.push(s) };
};

describe('cortexcast experiment (tiny simulated session)', () => {
  let data: string;
  let work: string;
  beforeAll(async () => {
    data = await tinyDataset();
    work = mkdtempSync(join(tmpdir(), 'cc-exp-'));
  }, 60_000);

  it('data-scaling (ridge, 2 values x 2 seeds, --jobs 2): one CSV row per run and seed, well-formed figures; a rerun skips finished runs; a changed plan is refused', async () => {
    const out = join(work, 'data-scaling');
    const options = { name: 'data-scaling' as const, data: [data], out, decoder: 'ridge' as const, seeds: 2, grid: ['100', '240'] };
    const first = collect();
    const r = await startExperiment(options, { jobs: 2, log: first.log });
    expect(r.planState).toBe('new');
    const rows = readCsv(join(out, 'results.csv'));
    expect(rows.map((x) => [x.value, x.seed, x.state])).toEqual([
      ['100', '1', 'done'],
      ['100', '2', 'done'],
      ['240', '1', 'done'],
      ['240', '2', 'done'],
    ]);
    // The cap reached the fit: what the bundle recorded and the CSV say, and the scores differ with it.
    expect(rows.map((x) => Number(x.train_trials))).toEqual([100, 100, 240, 240]);
    expect(loadBundle(join(out, 'runs/train-100-seed1/bundle')).manifest.training.config.trainTrials).toBe(100);
    for (const x of rows) for (const k of ['test_ssiml', 'test_mse', 'test_fid', 'test_pixcorr', 'test_identLow', 'test_identHigh', 'validation_mse']) expect(Number.isFinite(Number(x[k])) && x[k] !== '', `${x.run} ${k}`).toBe(true);
    expect(rows[0].test_mse).not.toBe(rows[2].test_mse);
    // Ridge has no randomness: its seeds agree exactly.
    expect(rows[0].test_mse).toBe(rows[1].test_mse);

    // figure.svg parses (librsvg renders it) into four panels; figure.png is its picture; the grid has a row per value under the stimuli.
    const svg = readFileSync(join(out, 'figure.svg'), 'utf8');
    const rendered = await sharp(Buffer.from(svg)).metadata();
    expect(rendered.width).toBeGreaterThan(800);
    for (const label of ['SSIML (test', 'MSE (test', 'FID-64 (test', 'PixCorr (test', '>100<', '>240<', 'training images']) expect(svg).toContain(label);
    const png = PNG.sync.read(readFileSync(join(out, 'figure.png')));
    expect(png.width).toBe(2 * rendered.width!);
    const grid = PNG.sync.read(readFileSync(join(out, 'reconstructions.png')));
    const tile = 36 * 3 + 4;
    expect(grid.height).toBe(3 * tile + 12);
    expect(grid.width).toBe(130 + 8 * (64 * 3 + 4) + 4);
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as { values: { value: number; done: number; test: { mse: { mean: number; sd: number; n: number } } }[] };
    expect(summary.values.map((v) => [v.value, v.done, v.test.mse.n, v.test.mse.sd])).toEqual([
      [100, 2, 2, 0],
      [240, 2, 2, 0],
    ]);
    // Against the first value, seed by seed: the CSV's own difference, over both seeds.
    const vs = (summary.values[1] as unknown as { vsFirst: { mse: { mean: number; n: number } } }).vsFirst.mse;
    expect(vs.n).toBe(2);
    expect(vs.mean).toBeCloseTo(Number(rows[2].test_mse) - Number(rows[0].test_mse), 5);
    expect(summary.values[0]).not.toHaveProperty('vsFirst');
    expect(r.report!.table.split('\n')[1]).toMatch(/^train\s+seeds\s+SSIML\s+MSE\s+FID-64\s+PixCorr\s+ident low\s+ident high\s+SSIML vs 100\s+MSE vs 100$/);
    expect(r.report!.table).toMatch(new RegExp(`\\n240\\s+2/2\\s+${Number(rows[2].test_ssiml).toFixed(4)} \\+- 0\\.0000`));

    const results = ['train-100-seed1', 'train-240-seed2'].map((id) => join(out, 'runs', id, 'result.json'));
    const before = results.map((f) => statSync(f).mtimeMs);
    const again = collect();
    expect((await startExperiment(options, { jobs: 2, log: again.log })).planState).toBe('same');
    expect(again.lines).toContain('4 of 4 runs are done already; 0 to run');
    expect(results.map((f) => statSync(f).mtimeMs)).toEqual(before);

    // An unfinished run (no result) is run again, alone.
    rmSync(join(out, 'runs/train-240-seed1/result.json'));
    const third = collect();
    await startExperiment(options, { log: third.log });
    expect(third.lines).toContain('3 of 4 runs are done already; 1 to run');
    expect(existsSync(join(out, 'runs/train-240-seed1/result.json'))).toBe(true);

    // More seeds, nothing else changed: only the added seed's runs train; the planned runs keep their index and result.
    const planned = readPlan(out).runs;
    const finished = finishedResults(out);
    const more = collect();
    expect((await startExperiment({ ...options, seeds: 3 }, { jobs: 2, log: more.log })).planState).toBe('more-seeds');
    expect(more.lines).toContain('4 of 6 runs are done already; 2 to run');
    const extended = readPlan(out);
    expect(extended.seeds).toEqual([1, 2, 3]);
    expect(extended.runs.slice(0, 4)).toEqual(planned);
    expect(extended.runs.slice(4).map((x) => [x.index, x.id])).toEqual([
      [4, 'train-100-seed3'],
      [5, 'train-240-seed3'],
    ]);
    expect(finishedResults(out)).toMatchObject(finished);
    expect(Object.keys(finishedResults(out))).toHaveLength(6);
    expect(readCsv(join(out, 'results.csv')).map((x) => [x.value, x.seed, x.state])).toEqual([
      ['100', '1', 'done'],
      ['100', '2', 'done'],
      ['100', '3', 'done'],
      ['240', '1', 'done'],
      ['240', '2', 'done'],
      ['240', '3', 'done'],
    ]);
    // The same command again is a resume of the extended plan; a list without the folder's seeds is another plan.
    expect((await startExperiment({ ...options, seeds: 3 }, { log: collect().log })).planState).toBe('same');
    await expect(startExperiment({ ...options, seeds: [2, 3] }, { log: collect().log })).rejects.toThrow(/CC_ERR_EXPERIMENT: .*another plan \(seeds: \[1,2,3\] there, \[2,3\] now; runs: 6 planned there, 4 now\) \(more seeds may be added: the list must keep the folder's seeds 1,2,3\)/);
    await expect(startExperiment({ ...options, seeds: 4, grid: ['100'] }, { log: collect().log })).rejects.toThrow(/another plan \(swept\.values: \[100,240\] there, \[100\] now; seeds: \[1,2,3\] there, \[1,2,3,4\] now; runs: 6 planned there, 4 now\); rerun/);
    await expect(startExperiment({ ...options, maxSteps: 5 }, { log: collect().log })).rejects.toThrow(/training\.maxSteps: absent there, 5 now/);
  }, 180_000);

  it('the report pairs seeds: differences against the first value seed by seed, over the seeds both finished', async () => {
    const out = join(work, 'paired');
    // Seeds 1 and 3 planned, then seed 2 added: the plan holds its runs out of value order.
    await startExperiment({ name: 'data-scaling', data: [data], out, decoder: 'ridge', seeds: [1, 3], grid: ['100', '240'] }, { dryRun: true, log: () => undefined });
    expect((await startExperiment({ name: 'data-scaling', data: [data], out, decoder: 'ridge', seeds: [1, 2, 3], grid: ['100', '240'] }, { dryRun: true, log: () => undefined })).planState).toBe('more-seeds');
    const plan = readPlan(out);
    expect(plan.runs.map((r) => r.id)).toEqual(['train-100-seed1', 'train-100-seed3', 'train-240-seed1', 'train-240-seed3', 'train-100-seed2', 'train-240-seed2']);
    // Hand-made scores (seed 3 of the first value unfinished): paired, 240 is better by 0.01 on every seed;
    // the unpaired means say it is worse (0.0667 vs 0.06).
    const mse: Record<string, number> = { 'train-100-seed1': 0.05, 'train-100-seed2': 0.07, 'train-240-seed1': 0.04, 'train-240-seed2': 0.06, 'train-240-seed3': 0.1 };
    for (const r of plan.runs) {
      if (mse[r.id] === undefined) continue;
      mkdirSync(join(out, r.dir), { recursive: true });
      const m = { ssiml: 0.3, mse: mse[r.id], ssim: 0.4, pixcorr: 0.7 };
      writeFileSync(join(out, r.dir, 'result.json'), JSON.stringify({ format: 'cortexcast-experiment-run', id: r.id, value: r.value, seed: r.seed, bundle: 'bundle', neurons: 300, trainTrials: Number(r.value), test: m, validation: m, seconds: 1, finishedAt: new Date().toISOString() }));
    }
    const { writeExperimentReport } = await import('../../src/training/experiment/report.js');
    const rep = await writeExperimentReport(out);
    const [first, second] = rep.summary;
    expect(first.vsFirst).toBeUndefined();
    expect([first.done, second.done]).toEqual([2, 3]);
    expect(second.test.mse.mean).toBeCloseTo(0.0667, 4);
    expect(second.vsFirst!.mse.n).toBe(2);
    expect(second.vsFirst!.mse.mean).toBeCloseTo(-0.01, 10);
    expect(second.vsFirst!.mse.sd).toBeCloseTo(0, 10);
    const lines = rep.table.split('\n');
    expect(lines[2]).toMatch(/^100\s+2\/3\s+0\.3000 \+- 0\.0000\s+0\.0600 \+- 0\.0141\s+-\s+0\.700 \+- 0\.000\s+-\s+-\s+-\s+-$/);
    // Two pairs of three finished seeds: the count is said.
    expect(lines[3]).toMatch(/^240\s+3\/3\s.*\+0\.0000 \+- 0\.0000 \(n=2\)\s+-0\.0100 \+- 0\.0000 \(n=2\)$/);
    // results.csv and the status view list runs value by value, seeds in order, whatever the plan's order.
    expect(readCsv(join(out, 'results.csv')).map((x) => x.run)).toEqual(['train-100-seed1', 'train-100-seed2', 'train-100-seed3', 'train-240-seed1', 'train-240-seed2', 'train-240-seed3']);
    expect(experimentProgress(out).runs.map((x) => x.id)).toEqual(['train-100-seed1', 'train-100-seed2', 'train-100-seed3', 'train-240-seed1', 'train-240-seed2', 'train-240-seed3']);
    // A plan whose run indices are not their positions is refused: run-one and Slurm tasks name runs by index.
    const bad = JSON.parse(readFileSync(join(out, 'plan.json'), 'utf8')) as { runs: { index: number }[] };
    bad.runs[0].index = 5;
    writeFileSync(join(out, 'plan.json'), JSON.stringify(bad));
    expect(() => readPlan(out)).toThrow(/runs\[i\]\.index must be i/);
  }, 60_000);

  it('neuron-scaling (ridge): random neuron subsets, the same for every seed; a subset bundle takes frames of its own size', async () => {
    const out = join(work, 'neuron-scaling');
    await startExperiment({ name: 'neuron-scaling', data: [data], out, decoder: 'ridge', seeds: 2, grid: ['50', '300'] }, { jobs: 2, log: collect().log });
    const plan = readPlan(out);
    const ds = SensoriumDataset.open(data);
    const subset = neuronSubset(plan, 50);
    expect(subset).toEqual(plan.neuronOrder!.slice(0, 50).sort((a, b) => a - b));
    // Random, not the first 50 columns.
    expect(subset).not.toEqual([...Array(50).keys()]);
    const ids = (run: string): number[] => loadBundle(join(out, 'runs', run, 'bundle')).unitIds;
    expect(ids('neurons-50-seed1')).toEqual(subset.map((i) => ds.unitIds[i]));
    expect(ids('neurons-50-seed2')).toEqual(ids('neurons-50-seed1'));
    expect(ids('neurons-300-seed1')).toEqual(ds.unitIds);
    const rows = readCsv(join(out, 'results.csv'));
    expect(rows.map((x) => Number(x.neurons))).toEqual([50, 50, 300, 300]);
    expect(rows.every((x) => x.state === 'done')).toBe(true);
    // Served as it was trained: 50 responses in, one image out.
    const b = loadBundle(join(out, 'runs/neurons-50-seed1/bundle'));
    expect(b.manifest.input.neurons).toBe(50);
    const { session } = await createSession(b.model);
    const img = await runOnce(session, { responses: tensor('float32', [1, 50], new Float32Array(50).fill(0.3)) });
    expect(img.image.dims).toEqual([1, 1, 36, 64]);
  }, 180_000);

  it('loss (report CNN, 2 steps): each objective reaches training; an interrupted run resumes from its checkpoint', async () => {
    const out = join(work, 'loss');
    const options = { name: 'loss' as const, data: [data], out, decoder: 'cnn' as const, seeds: 1, grid: ['mse', 'mae'], maxSteps: 2 };
    await startExperiment(options, { log: collect().log });
    const config = (id: string): { loss: string; kind: string } => JSON.parse(readFileSync(join(out, 'runs', id, 'train/config.json'), 'utf8'));
    expect(config('loss-mse-seed1')).toMatchObject({ kind: 'cnn', loss: 'mse', recipe: 'report' });
    expect(config('loss-mae-seed1').loss).toBe('mae');
    expect(readCsv(join(out, 'results.csv')).map((x) => [x.value, x.state, x.steps])).toEqual([
      ['mse', 'done', '2'],
      ['mae', 'done', '2'],
    ]);
    // As if killed after its last checkpoint: no stop.json, no result. The rerun resumes at step 2 instead of starting over.
    const run = join(out, 'runs/loss-mae-seed1');
    rmSync(join(run, 'result.json'));
    rmSync(join(run, 'train/stop.json'));
    await startExperiment(options, { log: collect().log });
    expect(readFileSync(join(run, 'log.txt'), 'utf8')).toMatch(/cnn: resumed after epoch 1 \(step 2\)/);
    expect(JSON.parse(readFileSync(join(run, 'result.json'), 'utf8')).steps).toBe(2);
  }, 180_000);

  it("neuron-scaling with the GAN: one encoder and MEI set per session, each subset's readin on the MEIs of its own best-predicted neurons", async () => {
    const out = join(work, 'gan-neurons');
    await startExperiment(
      { name: 'neuron-scaling', data: [data], out, seeds: 1, grid: ['100', '300'], maxSteps: 2, encoderMaxSteps: 2, meiNeurons: 16, meiSteps: 2 },
      { log: collect().log },
    );
    const plan = readPlan(out);
    expect(plan.decoder).toBe('gan');
    expect(plan.prepare).toHaveLength(1);
    const corr = readNpy(join(out, plan.prepare[0].encoder, NEURON_CORRELATION_FILE)).data as Float32Array;
    const subset = neuronSubset(plan, 100);
    const best = readinNeurons(corr, subset, 16);
    // The session's MEI set is the union of every subset's best 16.
    const made = Array.from(readNpy(join(out, plan.prepare[0].meis, 'neuron_index.npy')).data as BigInt64Array, Number);
    const bestOfAll = readinNeurons(corr, [...corr.keys()], 16);
    expect(made).toEqual([...new Set([...best, ...bestOfAll])].sort((a, b) => a - b));
    expect(made.length).toBeGreaterThan(16);
    // The subset run's MEIs are indexed by position in the subset, and are those neurons' MEIs.
    const meis = join(out, 'runs/neurons-100-seed1/meis');
    const position = Array.from(readNpy(join(meis, 'neuron_index.npy')).data as BigInt64Array, Number);
    expect(position.map((p) => subset[p])).toEqual(best);
    const all = readNpy(join(out, plan.prepare[0].meis, 'meis.npy')).data as Float32Array;
    const mine = readNpy(join(meis, 'meis.npy')).data as Float32Array;
    const P = 36 * 64;
    expect(Array.from(mine.subarray(5 * P, 6 * P))).toEqual(Array.from(all.subarray(made.indexOf(best[5]) * P, (made.indexOf(best[5]) + 1) * P)));
    const cfg = JSON.parse(readFileSync(join(out, 'runs/neurons-100-seed1/train/config.json'), 'utf8')) as { kind: string; meiNeurons: number; recipe: string };
    expect(cfg).toMatchObject({ kind: 'gan', meiNeurons: 16, recipe: 'report' });
    expect(loadBundle(join(out, 'runs/neurons-100-seed1/bundle')).manifest.input.neurons).toBe(100);
    // The full-population run's readin takes its own best 16 too, not the session's whole set (the union).
    const fullMeis = join(out, 'runs/neurons-300-seed1/meis');
    expect(Array.from(readNpy(join(fullMeis, 'dataset_neuron_index.npy')).data as BigInt64Array, Number)).toEqual(bestOfAll);
    expect(Array.from(readNpy(join(fullMeis, 'neuron_index.npy')).data as BigInt64Array, Number)).toEqual(bestOfAll);
    expect(readNpy(join(fullMeis, 'meis.npy')).shape).toEqual([16, 36, 64]);
    expect(JSON.parse(readFileSync(join(out, 'runs/neurons-300-seed1/train/config.json'), 'utf8')).meiNeurons).toBe(16);
    expect(loadBundle(join(out, 'runs/neurons-300-seed1/bundle')).manifest.input.neurons).toBe(300);
    expect(readCsv(join(out, 'results.csv')).map((x) => x.state)).toEqual(['done', 'done']);
  }, 240_000);

  it('plans of the other experiments set what the report varies; impossible ones are refused', async () => {
    const plan = async (name: 'channels' | 'readin' | 'sessions' | 'loss', extra: Record<string, unknown> = {}) =>
      (await startExperiment({ name, data: [data], out: join(work, `plan-${name}`), seeds: 2, ...extra }, { dryRun: true, log: collect().log })).plan;
    const channels = await plan('channels', { grid: ['8', '16'] });
    expect(channels.runs.map((r) => [r.id, r.settings])).toEqual([
      ['channels-8-seed1', { readinChannels: 8 }],
      ['channels-8-seed2', { readinChannels: 8 }],
      ['channels-16-seed1', { readinChannels: 16 }],
      ['channels-16-seed2', { readinChannels: 16 }],
    ]);
    const readin = await plan('readin');
    expect(readin.swept.values).toEqual(['base', 'C', 'T', 'C+T']);
    expect(readin.runs.filter((r) => r.seed === 1).map((r) => [r.id, r.settings])).toEqual([
      ['readin-base-seed1', { coordinates: false, transform: false }],
      ['readin-c-seed1', { coordinates: true, transform: false }],
      ['readin-t-seed1', { coordinates: false, transform: true }],
      ['readin-c-t-seed1', { coordinates: true, transform: true }],
    ]);
    expect((await plan('loss')).swept.values).toEqual(['logssim', 'mse', 'mae']);
    // B-All: the missing mice are simulated from the evaluated one's simulator with other seeds, each with its own encoder and MEIs.
    const sessions = await plan('sessions', { grid: ['1', '3'] });
    const seed = (SensoriumDataset.open(data).simulation() as { config: { simulator: { seed: number } } }).config.simulator.seed;
    expect(sessions.data.slice(1)).toEqual(['mice/mouse2', 'mice/mouse3']);
    expect(sessions.prepare.map((p) => p.synth?.seed)).toEqual([undefined, seed + 1000, seed + 2000]);
    expect(sessions.runs.map((r) => r.settings.sessions)).toEqual([1, 1, 3, 3]);

    await expect(plan('loss', { seeds: 1.5 })).rejects.toThrow(/CC_ERR_OPTION: .*--seeds 1\.5: a count of seeds is a positive integer/);
    const cli = spawnSync(process.execPath, [join(repoRoot, 'bin/cortexcast.js'), 'experiment', 'loss', '--data', data, '--out', join(work, 'plan-seeds'), '--seeds', '1.5', '--dry-run'], { encoding: 'utf8' });
    expect(cli.status).not.toBe(0);
    expect(cli.stderr).toMatch(/seeds must be a positive integer count or a comma-separated list of positive integers/);
    expect(existsSync(join(work, 'plan-seeds'))).toBe(false);
    // '2,' is seed 2 alone (a bare 2 is the count: seeds 1 and 2).
    const one = spawnSync(process.execPath, [join(repoRoot, 'bin/cortexcast.js'), 'experiment', 'loss', '--data', data, '--out', join(work, 'plan-seed2'), '--decoder', 'cnn', '--seeds', '2,', '--dry-run'], { encoding: 'utf8' });
    expect(one.status, one.stderr).toBe(0);
    expect((JSON.parse(readFileSync(join(work, 'plan-seed2', 'plan.json'), 'utf8')) as { seeds: number[] }).seeds).toEqual([2]);
    const none = spawnSync(process.execPath, [join(repoRoot, 'bin/cortexcast.js'), 'experiment', 'loss', '--data', data, '--out', join(work, 'plan-noseed'), '--decoder', 'cnn', '--seeds', ',', '--dry-run'], { encoding: 'utf8' });
    expect(none.status).not.toBe(0);
    expect(none.stderr).toMatch(/seeds must be a positive integer count or a comma-separated list/);
    await expect(plan('channels', { decoder: 'cnn' })).rejects.toThrow(/CC_ERR_OPTION: .*channels varies a setting of the gan decoder; --decoder cnn has none/);
    await expect(startExperiment({ name: 'data-scaling', data: [data], out: join(work, 'too-many'), grid: ['500'] }, { dryRun: true })).rejects.toThrow(/500 training images asked for, the dataset has 240/);
  }, 60_000);

  it("readin's C variant: the GAN readin takes neuron coordinates for every image of a free-size batch", async () => {
    const K = 6;
    const build = (coordinates: Float32Array) => {
      const g = newGraph('c');
      const ctx = { g, rng: new Rng(1), mode: 'eval' as const, params: [] as string[], state: new Map() };
      const m = ganGenerator(ctx, 'batch', { ...GAN_PROFILES.small, coordinates: true }, { neurons: 10, mei: { meis: new Float32Array(K * 36 * 64).fill(0.2), neuronIndex: [0, 1, 3, 4, 7, 9], coordinates } });
      g.output(m.output, 'image');
      return createSession(g);
    };
    const coords = Float32Array.from({ length: K * 2 }, (_, i) => Math.sin(i) * 0.8);
    const row = Float32Array.from({ length: 10 }, (_, i) => (i % 4) * 0.5);
    const decode = async (coordinates: Float32Array, rows: number): Promise<Float32Array> => {
      const { session } = await build(coordinates);
      const x = new Float32Array(rows * 10);
      for (let r = 0; r < rows; r++) x.set(row, r * 10);
      return (await runOnce(session, { responses: tensor('float32', [rows, 10], x) })).image.data as Float32Array;
    };
    const one = await decode(coords, 1);
    const three = await decode(coords, 3);
    // The same response row gives the same image wherever it sits in the batch.
    for (let r = 0; r < 3; r++) expect(Math.max(...three.subarray(r * one.length, (r + 1) * one.length).map((v, i) => Math.abs(v - one[i])))).toBeLessThan(1e-5);
    // And the coordinates are read: other coordinates, another image.
    const other = await decode(coords.map((v) => -v), 1);
    expect(Math.max(...other.map((v, i) => Math.abs(v - one[i])))).toBeGreaterThan(1e-4);
  });

  it('experiment status (CLI): done and failed runs, the failure named, with an ETA', async () => {
    const copy = join(work, 'copy');
    cpSync(data, copy, { recursive: true });
    const out = join(work, 'status');
    await startExperiment({ name: 'data-scaling', data: [copy], out, decoder: 'ridge', seeds: 1, grid: ['100', '240'] }, { dryRun: true, log: collect().log });
    await runOne(out, 0, { quiet: true, log: () => undefined });
    rmSync(join(copy, 'data/responses/7.npy'));
    await expect(runOne(out, 1, { quiet: true, log: () => undefined })).rejects.toThrow(/CC_ERR_DATASET_MISSING/);
    const p = experimentProgress(out);
    expect(p.counts).toMatchObject({ done: 1, failed: 1, pending: 0, running: 0 });
    expect(p.etaSeconds).toBeGreaterThan(0);
    const text = execFileSync(process.execPath, [join(repoRoot, 'bin/cortexcast.js'), 'experiment', 'status', out], { encoding: 'utf8' });
    expect(text).toMatch(/done 1, running 0, failed 1, interrupted 0, pending 0; ETA \d+s/);
    expect(text).toMatch(/train-240-seed1 +failed .*CC_ERR_DATASET_MISSING/);
    // A cut submissions.json is refused, naming itself, rather than read as no history (the next submission would overwrite it).
    mkdirSync(join(out, 'slurm'));
    writeFileSync(join(out, 'slurm/submissions.json'), '[{"submittedAt": "2024');
    expect(() => readSubmissions(out)).toThrow(/CC_ERR_EXPERIMENT: .*slurm\/submissions\.json is not valid JSON/);
    writeFileSync(join(out, 'slurm/submissions.json'), '[{"submittedAt": 1}]');
    expect(() => readSubmissions(out)).toThrow(/CC_ERR_EXPERIMENT: .*slurm\/submissions\.json: 0\.submittedAt: /);
  }, 120_000);
});
