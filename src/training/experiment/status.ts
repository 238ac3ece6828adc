import { hostname } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { preparationDone } from './prepare.js';
import { readJsonIf, readPlan, runsByValue, type Plan } from './plan.js';
import { processAlive, readRunResult, readRunStatus, runFiles, slurmQueue } from './run-one.js';
import { readSubmissions } from './slurm.js';

export type RunState = 'done' | 'running' | 'failed' | 'interrupted' | 'pending';

export interface RunProgress {
  id: string;
  state: RunState;
  /** Seconds: the whole run when done, since its start when running. */
  seconds?: number;
  /** Optimisation steps validated so far (deep decoders). */
  step?: number;
  error?: string;
  where?: string;
}

export interface ExperimentProgress {
  plan: Plan;
  preparations: { index: number; done: boolean }[];
  runs: RunProgress[];
  counts: Record<RunState, number>;
  /** Seconds until every run is done at the present pace (undefined until something can be timed). */
  etaSeconds?: number;
  slurmJobs: string[];
}

const HISTORY = z.array(z.object({ step: z.number() }).passthrough());

/**
 * Where every run of an experiment stands, from its run folders alone (so it works for local and
 * Slurm runs alike): done (result.json), running, failed (status.json with the error), interrupted
 * (its process on this host is gone, or its Slurm task left the queue without a result) or pending. The ETA assumes the remaining runs take
 * as long as the finished ones on average (or the per-run budget while none has finished) and run as
 * many at once as are running now.
 */
export function experimentProgress(expDir: string, now = Date.now()): ExperimentProgress {
  const plan = readPlan(expDir);
  const host = hostname();
  let queue: Set<string> | undefined | null = null;
  const queued = (job: string): boolean => {
    if (queue === null) queue = slurmQueue();
    return queue === undefined || queue.has(job);
  };
  const runs: RunProgress[] = runsByValue(plan).map((run) => {
    const result = readRunResult(expDir, run);
    if (result) return { id: run.id, state: 'done', seconds: result.seconds, step: result.steps };
    const st = readRunStatus(expDir, run);
    if (!st) return { id: run.id, state: 'pending' };
    const where = st.slurmJob ? `slurm ${st.slurmJob} on ${st.host}` : `${st.host} pid ${st.pid}`;
    if (st.state === 'failed') return { id: run.id, state: 'failed', error: st.error, where };
    const history = readJsonIf(join(runFiles(expDir, run).train, 'metrics.json'), HISTORY);
    const step = history?.length ? history[history.length - 1].step : undefined;
    const seconds = (now - Date.parse(st.startedAt)) / 1000;
    const gone = st.slurmJob ? !queued(st.slurmJob) : st.host === host && !processAlive(st.pid);
    return { id: run.id, state: gone ? 'interrupted' : 'running', seconds, step, where };
  });
  const counts: Record<RunState, number> = { done: 0, running: 0, failed: 0, interrupted: 0, pending: 0 };
  for (const r of runs) counts[r.state]++;
  const finished = runs.filter((r) => r.state === 'done' && r.seconds !== undefined).map((r) => r.seconds!);
  const perRun = finished.length ? finished.reduce((a, b) => a + b, 0) / finished.length : plan.training.budgetSeconds;
  let etaSeconds: number | undefined;
  if (perRun !== undefined) {
    const left = runs.reduce((a, r) => a + (r.state === 'running' ? Math.max(0, perRun - (r.seconds ?? 0)) : r.state === 'done' ? 0 : perRun), 0);
    etaSeconds = counts.pending + counts.running + counts.failed + counts.interrupted === 0 ? 0 : left / Math.max(1, counts.running);
  }
  return {
    plan,
    preparations: plan.prepare.map((p) => ({ index: p.index, done: preparationDone(expDir, p) })),
    runs,
    counts,
    etaSeconds,
    slurmJobs: readSubmissions(expDir).flatMap((s) => [s.prepare, s.runs, s.report].filter((x): x is string => !!x)),
  };
}

export const formatSeconds = (s: number): string => {
  const t = Math.round(s);
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  return `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m`;
};

/** The progress view `cortexcast experiment status DIR` prints. */
export function formatProgress(expDir: string, p: ExperimentProgress): string {
  const c = p.counts;
  const lines = [
    `${p.plan.experiment} (${p.plan.decoder}, ${p.plan.runs.length} runs: ${p.plan.swept.values.length} values x ${p.plan.seeds.length} seed${p.plan.seeds.length > 1 ? 's' : ''}) in ${expDir}`,
    `done ${c.done}, running ${c.running}, failed ${c.failed}, interrupted ${c.interrupted}, pending ${c.pending}; ETA ${p.etaSeconds === undefined ? 'unknown until a run finishes' : formatSeconds(p.etaSeconds)}`,
  ];
  if (p.preparations.length) lines.push(`GAN inputs (encoder + MEIs): ${p.preparations.map((x) => `session ${x.index} ${x.done ? 'ready' : 'not ready'}`).join(', ')}`);
  if (p.slurmJobs.length) lines.push(`Slurm jobs submitted: ${p.slurmJobs.join(', ')}`);
  const w = Math.max(...p.runs.map((r) => r.id.length));
  for (const r of p.runs)
    lines.push(
      `  ${r.id.padEnd(w)}  ${r.state.padEnd(11)} ${r.seconds === undefined ? ''.padEnd(8) : formatSeconds(r.seconds).padEnd(8)} ${r.step === undefined ? '' : `step ${r.step}`}${r.where && r.state !== 'done' ? `  (${r.where})` : ''}${r.error ? `  ${r.error.split('\n')[0]}` : ''}`.trimEnd(),
    );
  return lines.join('\n');
}
