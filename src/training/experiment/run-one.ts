import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { ccError } from '../../common/errors.js';
import { writeNpy } from '../../common/npy.js';
import { SensoriumDataset, sessionNames } from '../../datasets/sensorium.js';
import { openDataset } from '../../datasets/dataset-source.js';
import { trainDecoder } from '../decoders/train-decoder.js';
import { evaluateBundle } from '../eval/evaluate.js';
import { trainRidge } from '../ridge/train-ridge.js';
import { neuronSubset, planPath, readJsonIf, readPlan, writeJsonAtomic, type Plan, type PlannedRun } from './plan.js';
import { runMeis } from './prepare.js';

/** Test images kept per run for the experiment's reconstruction grid. */
export const GRID_IMAGES = 10;

const METRICS = z.object({ ssiml: z.number(), mse: z.number(), fid: z.number().optional(), ssim: z.number(), pixcorr: z.number() }).passthrough();

/** <run>/result.json: the run finished; what the report reads. */
export const RUN_RESULT = z
  .object({
    format: z.literal('cortexcast-experiment-run'),
    id: z.string(),
    value: z.union([z.number(), z.string()]),
    seed: z.number().int(),
    /** The evaluated session's bundle, relative to the run folder. */
    bundle: z.string(),
    neurons: z.number().int().positive(),
    trainTrials: z.number().int().positive(),
    test: METRICS,
    /** The exported checkpoint's validation scores (what chose it; ridge: its alpha's). */
    validation: METRICS.partial(),
    steps: z.number().int().optional(),
    trainSeconds: z.number().optional(),
    seconds: z.number(),
    finishedAt: z.string(),
  })
  .strict();
export type RunResult = z.infer<typeof RUN_RESULT>;

/** <run>/status.json: where a run stands while nothing final is written, and why it failed. */
export const RUN_STATUS = z
  .object({
    state: z.enum(['running', 'done', 'failed']),
    host: z.string(),
    pid: z.number().int(),
    slurmJob: z.string().optional(),
    startedAt: z.string(),
    finishedAt: z.string().optional(),
    error: z.string().optional(),
  })
  .strict();
export type RunStatus = z.infer<typeof RUN_STATUS>;

export const runFiles = (expDir: string, run: PlannedRun) => {
  const dir = planPath(expDir, run.dir);
  return {
    dir,
    result: join(dir, 'result.json'),
    status: join(dir, 'status.json'),
    bundle: join(dir, 'bundle'),
    train: join(dir, 'train'),
    log: join(dir, 'log.txt'),
    recon: join(dir, 'recon-test.npy'),
    stimuli: join(dir, 'stimuli-test.npy'),
  };
};

export const readRunResult = (expDir: string, run: PlannedRun): RunResult | undefined => readJsonIf(runFiles(expDir, run).result, RUN_RESULT);
export const readRunStatus = (expDir: string, run: PlannedRun): RunStatus | undefined => readJsonIf(runFiles(expDir, run).status, RUN_STATUS);

/** Whether a process of this host is alive (signal 0 checks without signalling). */
export const processAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/**
 * Slurm job ids (array tasks as 123_4, pending ones too) in the queue now, or undefined where squeue
 * cannot say (not a Slurm host): a task that left the queue without a result was killed (time limit,
 * node failure).
 */
export function slurmQueue(): Set<string> | undefined {
  const r = spawnSync('squeue', ['-h', '-r', '-o', '%i'], { encoding: 'utf8', timeout: 10_000 });
  return r.status === 0 ? new Set(r.stdout.split('\n').map((l) => l.trim()).filter(Boolean)) : undefined;
}

const slurmJob = (): string | undefined => {
  const e = process.env;
  if (e.SLURM_ARRAY_JOB_ID && e.SLURM_ARRAY_TASK_ID) return `${e.SLURM_ARRAY_JOB_ID}_${e.SLURM_ARRAY_TASK_ID}`;
  return e.SLURM_JOB_ID;
};

/** Train one run's decoder (resuming a checkpoint the run left) into <run>/bundle; returns the evaluated session's bundle. */
async function train(expDir: string, plan: Plan, run: PlannedRun, log: (s: string) => void, quiet?: boolean): Promise<string> {
  const f = runFiles(expDir, run);
  const s = run.settings;
  const dirs = plan.data.slice(0, s.sessions ?? 1).map((d) => planPath(expDir, d));
  // The subset of every neuron is the session itself: trained as such.
  const neurons = s.neurons === undefined || s.neurons === plan.neuronOrder?.length ? undefined : neuronSubset(plan, s.neurons);
  // But its readin takes the best `meiNeurons` of that subset like every other, not the session's
  // whole MEI set (the union over all subsets).
  const meiSubset = s.neurons === undefined ? undefined : neuronSubset(plan, s.neurons);
  if (plan.decoder === 'ridge') {
    await trainRidge({ data: dirs[0], out: f.bundle, maxTrain: s.maxTrain, neurons, quiet, log });
    return f.bundle;
  }
  // A run whose training finished (stop.json) but not its evaluation is evaluated, not trained further.
  if (!existsSync(join(f.train, 'stop.json'))) {
    const t = plan.training;
    await trainDecoder({
      kind: plan.decoder,
      data: dirs.length === 1 ? dirs[0] : dirs,
      out: f.bundle,
      run: f.train,
      recipe: t.recipe,
      profile: t.profile,
      budgetSeconds: t.budgetSeconds,
      maxSteps: t.maxSteps,
      epochs: t.epochs,
      validateEvery: t.validateEvery,
      seed: run.seed,
      maxTrain: s.maxTrain,
      neurons,
      readinChannels: s.readinChannels,
      transform: s.transform,
      coordinates: s.coordinates,
      loss: s.loss,
      meis: plan.decoder === 'gan' ? dirs.map((_, k) => runMeis(expDir, plan, k, meiSubset, f.dir)) : undefined,
      resume: true,
      quiet,
      log,
    });
  }
  return dirs.length > 1 ? join(f.bundle, sessionNames(dirs)[0]) : f.bundle;
}

/**
 * Run `index` of an experiment: train its decoder (or resume it), evaluate it on the evaluated
 * session's test tier (Table I plus SSIM and PixCorr), keep its first test reconstructions, and write
 * result.json. A run with a result is skipped; a failure is recorded in status.json and rethrown.
 */
export async function runOne(expDir: string, index: number, o: { quiet?: boolean; log?: (s: string) => void } = {}): Promise<RunResult | 'skipped'> {
  const t0 = Date.now();
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const plan = readPlan(expDir);
  const run = plan.runs[index];
  if (!run) throw ccError('CC_ERR_EXPERIMENT', expDir, `no run ${index} (the plan has ${plan.runs.length}: 0..${plan.runs.length - 1})`);
  const f = runFiles(expDir, run);
  if (readRunResult(expDir, run)) {
    log(`run ${run.id}: done already`);
    return 'skipped';
  }
  const prev = readRunStatus(expDir, run);
  // Two runners on one run folder would write the same checkpoint; another host's run cannot be checked from here.
  if (prev?.state === 'running' && prev.host === hostname() && prev.pid !== process.pid && processAlive(prev.pid))
    throw ccError('CC_ERR_EXPERIMENT', expDir, `run ${run.id} is running already (pid ${prev.pid}, since ${prev.startedAt})`);
  // A Slurm task of an earlier submission still queued holds it too (a requeued task of the same job may go on).
  if (prev?.state === 'running' && prev.slurmJob && prev.slurmJob !== slurmJob() && slurmQueue()?.has(prev.slurmJob))
    throw ccError('CC_ERR_EXPERIMENT', expDir, `run ${run.id} is running already as Slurm job ${prev.slurmJob} on ${prev.host} (since ${prev.startedAt}); wait for it or scancel ${prev.slurmJob}`);
  mkdirSync(f.dir, { recursive: true });
  const status: RunStatus = { state: 'running', host: hostname(), pid: process.pid, ...(slurmJob() && { slurmJob: slurmJob() }), startedAt: new Date(t0).toISOString() };
  writeJsonAtomic(f.status, status);
  try {
    log(`run ${run.id}: ${plan.decoder}, ${plan.swept.key} ${run.value}, seed ${run.seed}`);
    const bundle = await train(expDir, plan, run, log, o.quiet);
    const ev = await evaluateBundle(bundle, planPath(expDir, plan.data[0]), { fid: 64 });
    const P = ev.h * ev.w;
    const n = Math.min(GRID_IMAGES, ev.count);
    writeNpy(f.recon, ev.recon.subarray(0, n * P), [n, ev.h, ev.w]);
    writeNpy(f.stimuli, ev.targets.subarray(0, n * P), [n, ev.h, ev.w]);
    const m = ev.bundle.manifest;
    const stop = existsSync(join(f.train, 'stop.json')) ? (JSON.parse(readFileSync(join(f.train, 'stop.json'), 'utf8')) as { step?: number }) : undefined;
    const result: RunResult = {
      format: 'cortexcast-experiment-run',
      id: run.id,
      value: run.value,
      seed: run.seed,
      bundle: bundle.slice(f.dir.length + 1),
      neurons: m.input.neurons,
      trainTrials: trainTrialsOf(plan, run, expDir),
      test: { ...ev.metrics },
      validation: { ...(m.metrics.validation ?? {}) },
      ...(stop?.step !== undefined && { steps: stop.step }),
      ...(m.training.seconds !== undefined && { trainSeconds: m.training.seconds }),
      seconds: (Date.now() - t0) / 1000,
      finishedAt: new Date().toISOString(),
    };
    writeJsonAtomic(f.result, RUN_RESULT.parse(result));
    writeJsonAtomic(f.status, { ...status, state: 'done', finishedAt: result.finishedAt });
    log(`run ${run.id}: test SSIML ${ev.metrics.ssiml.toFixed(3)} MSE ${ev.metrics.mse.toFixed(3)} FID ${ev.metrics.fid?.toFixed(3) ?? '-'} (${result.seconds.toFixed(0)} s)`);
    return result;
  } catch (e) {
    writeJsonAtomic(f.status, { ...status, state: 'failed', finishedAt: new Date().toISOString(), error: e instanceof Error ? e.message : String(e) });
    throw e;
  }
}

/** Train trials the evaluated session's decoder saw: the cap, or the whole train tier. */
function trainTrialsOf(plan: Plan, run: PlannedRun, expDir: string): number {
  const all = openDataset(planPath(expDir, plan.data[0])).indices('train').length;
  return Math.min(all, run.settings.maxTrain ?? all);
}
