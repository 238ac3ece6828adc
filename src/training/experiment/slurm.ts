import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { ccError } from '../../common/errors.js';
import { readJsonFile } from '../../common/json-file.js';
import { defaultCacheDir } from '../eval/metrics/keras-nsfwjs.js';
import { writeFile } from '../report/figures.js';
import { CLI_SCRIPT, REPO_ROOT } from './cli-process.js';
import { writeJsonAtomic, type Plan, type PlannedRun } from './plan.js';
import { preparationDone } from './prepare.js';
import { readRunResult, readRunStatus, slurmQueue } from './run-one.js';

/** slurm/submissions.json: every submission of this experiment, newest last. */
const SUBMISSION = z
  .object({
    submittedAt: z.string(),
    prepare: z.string().optional(),
    runs: z.string().optional(),
    report: z.string(),
    prepareIndices: z.array(z.number().int()),
    runIndices: z.array(z.number().int()),
  })
  .strict();
export type SlurmSubmission = z.infer<typeof SUBMISSION>;

const submissionsFile = (expDir: string): string => join(expDir, 'slurm', 'submissions.json');

export function readSubmissions(expDir: string): SlurmSubmission[] {
  const f = submissionsFile(expDir);
  if (!existsSync(f)) return [];
  // A file that does not parse is refused, not read as no history: the next submission would overwrite it.
  return readJsonFile(f, z.array(SUBMISSION), 'CC_ERR_EXPERIMENT', expDir);
}

/** 0,1,2,5,7,8 -> '0-2,5,7-8' (sbatch --array syntax). */
export function arraySpec(indices: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < indices.length; ) {
    let j = i;
    while (j + 1 < indices.length && indices[j + 1] === indices[j] + 1) j++;
    parts.push(j > i ? `${indices[i]}-${indices[j]}` : `${indices[i]}`);
    i = j + 1;
  }
  return parts.join(',');
}

const TASK_ID = '$SLURM_ARRAY_TASK_ID';
/** A word for bash: single-quoted, except the array task id, which bash must expand. */
const shellWord = (s: string): string => (s === TASK_ID ? `"${TASK_ID}"` : `'${s.replace(/'/g, `'\\''`)}'`);

/**
 * A path inside a Slurm filename pattern: `%` starts a replacement (%j, %a...), so a literal one is
 * doubled. A newline cannot be written into a #SBATCH line at all and is refused.
 */
export function slurmLiteral(path: string): string {
  if (/[\n\r\0]/.test(path)) throw ccError('CC_ERR_EXPERIMENT', JSON.stringify(path.slice(0, 200)), 'a Slurm log path cannot hold a newline; use a folder name without one');
  return path.replace(/%/g, '%%');
}

/**
 * A #SBATCH option value, double-quoted: sbatch splits #SBATCH lines at spaces and ends them at '#'
 * outside quotes, and takes a backslash as an escape for the next character.
 */
export function sbatchValue(v: string): string {
  if (/[\n\r\0]/.test(v)) throw ccError('CC_ERR_EXPERIMENT', JSON.stringify(v.slice(0, 200)), 'a #SBATCH option cannot hold a newline');
  return `"${v.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

/**
 * A batch script that runs one cortexcast command per array task (or once, for the report). Threads:
 * the task's CPUs when Slurm says (--cpus-per-task), else CORTEXCAST_THREADS (sbatch exports the
 * submitter's environment), else 1, so tasks sharing a node do not each take every core. The cache
 * of converted networks is the submitter's (absolute), so every task reads the file converted before
 * submitting instead of converting its own under the checkout.
 */
export function batchScript(name: string, command: string[], log: { dir: string; file: string }): string {
  return [
    '#!/bin/bash',
    `#SBATCH --job-name=${sbatchValue(name)}`,
    `#SBATCH --output=${sbatchValue(`${slurmLiteral(log.dir)}/${log.file}`)}`,
    'set -euo pipefail',
    `cd ${shellWord(REPO_ROOT)}`,
    'export CORTEXCAST_THREADS="${SLURM_CPUS_PER_TASK:-${CORTEXCAST_THREADS:-1}}"',
    `export CORTEXCAST_CACHE=${shellWord(resolve(defaultCacheDir()))}`,
    `exec ${[process.execPath, CLI_SCRIPT, ...command].map(shellWord).join(' ')}`,
    '',
  ].join('\n');
}

function sbatch(args: string[], env: NodeJS.ProcessEnv): string {
  const r = spawnSync('sbatch', ['--parsable', ...args], { encoding: 'utf8', env });
  if (r.error) throw ccError('CC_ERR_EXPERIMENT', 'slurm', `sbatch could not be run (${r.error.message}); --slurm needs Slurm's client commands on PATH`);
  if (r.status !== 0) throw ccError('CC_ERR_EXPERIMENT', 'slurm', `sbatch ${args.join(' ')} failed (exit ${r.status}): ${r.stderr.trim()}`);
  // --parsable prints "jobid" or "jobid;cluster".
  return r.stdout.trim().split(';')[0];
}

/**
 * Submit what is left of the plan to Slurm: one array job for the sessions' GAN inputs (encoder and
 * MEIs), one array job with a task per unfinished run (after the first succeeded; a run that a task of
 * an earlier submission still in the queue is running is left to it), and the report
 * once the runs array has ended, however its tasks ended (`experiment report DIR` redoes it at any
 * time). `jobs` caps the runs running at once (--array=...%jobs); `sbatchArgs` go to every sbatch.
 */
export function submitToSlurm(expDir: string, plan: Plan, o: { jobs?: number; sbatchArgs?: string[]; env?: NodeJS.ProcessEnv; log: (s: string) => void }): SlurmSubmission | undefined {
  const env = o.env ?? process.env;
  const extra = o.sbatchArgs ?? [];
  // Read before submitting: a bad history file stops the submission, not the record of it.
  const history = readSubmissions(expDir);
  const prepareIndices = plan.prepare.filter((p) => !preparationDone(expDir, p)).map((p) => p.index);
  // A run an earlier job is training now, or whose task of an earlier array is still queued (no
  // status.json yet: pending, held), is left to it: a second task would train into the same checkpoint.
  const queue = slurmQueue();
  const queuedTask = new Map<number, string>();
  for (const s of history) if (s.runs) for (const i of s.runIndices) if (queue?.has(`${s.runs}_${i}`)) queuedTask.set(i, `${s.runs}_${i}`);
  const heldBy = (r: PlannedRun): string | undefined => {
    const st = readRunStatus(expDir, r);
    return st?.state === 'running' && st.slurmJob && queue?.has(st.slurmJob) ? st.slurmJob : queuedTask.get(r.index);
  };
  const unfinished = plan.runs.filter((r) => !readRunResult(expDir, r));
  const running = unfinished.flatMap((run) => {
    const job = heldBy(run);
    return job ? [{ run, job }] : [];
  });
  const runIndices = unfinished.filter((r) => !running.some((x) => x.run === r)).map((r) => r.index);
  if (running.length) o.log(`slurm: ${running.length} run(s) still running or queued in earlier jobs, not submitted again: ${running.map((x) => `${x.run.id} (${x.job})`).join(', ')}`);
  if (!prepareIndices.length && !runIndices.length) {
    o.log(running.length ? 'nothing else to submit' : 'every run is done; nothing to submit');
    return undefined;
  }
  const dir = join(expDir, 'slurm');
  mkdirSync(join(dir, 'logs'), { recursive: true });
  const script = (file: string, name: string, command: string[], log: string): string => {
    const path = join(dir, file);
    writeFile(path, batchScript(name, command, { dir: join(dir, 'logs'), file: log }));
    chmodSync(path, 0o755);
    return path;
  };
  const tag = `cc-${plan.experiment}`;
  const throttle = o.jobs ? `%${o.jobs}` : '';
  let prepare: string | undefined;
  if (prepareIndices.length) {
    const s = script('prepare.sbatch', `${tag}-prepare`, ['experiment', 'prepare', expDir, '--index', TASK_ID], 'prepare-%a.out');
    prepare = sbatch([`--array=${arraySpec(prepareIndices)}`, ...extra, s], env);
    o.log(`slurm: GAN inputs of ${prepareIndices.length} session(s) as job ${prepare}`);
  }
  let runs: string | undefined;
  if (runIndices.length) {
    const s = script('runs.sbatch', `${tag}-runs`, ['experiment', 'run-one', expDir, '--index', TASK_ID], 'run-%a.out');
    // A failed preparation makes the dependency impossible: the array is then cancelled, not left pending, so the report runs.
    runs = sbatch([`--array=${arraySpec(runIndices)}${throttle}`, ...(prepare ? [`--dependency=afterok:${prepare}`, '--kill-on-invalid-dep=yes'] : []), ...extra, s], env);
    o.log(`slurm: ${runIndices.length} run(s) as array job ${runs}${prepare ? ` (after ${prepare})` : ''}`);
  }
  const after = runs ?? prepare!;
  const reportScript = script('report.sbatch', `${tag}-report`, ['experiment', 'report', expDir], 'report.out');
  const report = sbatch([`--dependency=afterany:${after}`, ...extra, reportScript], env);
  o.log(`slurm: report as job ${report} (after ${after}); progress: cortexcast experiment status ${expDir}`);
  const submission: SlurmSubmission = { submittedAt: new Date().toISOString(), prepare, runs, report, prepareIndices, runIndices };
  writeJsonAtomic(submissionsFile(expDir), [...history, submission]);
  return submission;
}
