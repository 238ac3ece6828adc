import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { ccError } from '../../common/errors.js';
import { defaultCacheDir, inceptionModel } from '../eval/metrics/inception.js';
import { inParallel, runCli } from './cli-process.js';
import { buildPlan, planPath, readPlan, writeOrCheckPlan, type ExperimentOptions, type Plan } from './plan.js';
import { preparationDone } from './prepare.js';
import { writeExperimentReport, type ExperimentReport } from './report.js';
import { readRunResult, runFiles } from './run-one.js';
import { submitToSlurm, type SlurmSubmission } from './slurm.js';

/** Where the runs go: child processes of this one (`jobs` at once), or a Slurm cluster. */
export interface ExecutionOptions {
  jobs?: number;
  slurm?: boolean;
  /** Extra sbatch arguments for every job (partition, time limit, CPUs per task, ...). */
  sbatchArgs?: string[];
  /** Write (or check) the plan and stop. */
  dryRun?: boolean;
  log?: (s: string) => void;
}

export interface ExperimentOutcome {
  dir: string;
  plan: Plan;
  /** 'more-seeds': the folder's plan, with the runs of the seeds it lacked added. */
  planState: 'new' | 'same' | 'more-seeds';
  /** Local execution: the report made at the end. */
  report?: ExperimentReport;
  /** Slurm: the jobs submitted (none when every run was done). */
  submission?: SlurmSubmission;
}

/**
 * Run the plan's unfinished work on this machine: the sessions' GAN inputs, then every run without a
 * result, each as a `cortexcast experiment prepare|run-one` child process (`jobs` at once, each with
 * its share of the cores), its output in the run folder's log.txt. Failed runs are listed; the others
 * go on.
 */
async function runLocally(dir: string, plan: Plan, jobs: number, log: (s: string) => void): Promise<string[]> {
  // Children run in the checkout (cli-process): an absolute cache folder lets them read the networks converted here.
  const env = { ...process.env, CORTEXCAST_THREADS: process.env.CORTEXCAST_THREADS ?? String(Math.max(1, Math.floor(cpus().length / jobs))), CORTEXCAST_CACHE: resolve(defaultCacheDir()) };
  const preparations = plan.prepare.filter((p) => !preparationDone(dir, p));
  const failedPrep: number[] = [];
  await inParallel(preparations, jobs, async (p) => {
    const logFile = join(planPath(dir, p.encoder), '..', 'log.txt');
    log(`prepare ${p.index}: encoder and MEIs of ${plan.data[p.session]} (log: ${logFile})`);
    const code = await runCli(['experiment', 'prepare', dir, '--index', String(p.index)], logFile, env);
    if (code !== 0) failedPrep.push(p.index);
  });
  if (failedPrep.length) throw ccError('CC_ERR_EXPERIMENT', dir, `the GAN inputs of session(s) ${failedPrep.join(', ')} failed (see prepare/*/log.txt); no run started`);
  const todo = plan.runs.filter((r) => !readRunResult(dir, r));
  const skipped = plan.runs.length - todo.length;
  if (skipped) log(`${skipped} of ${plan.runs.length} runs are done already; ${todo.length} to run`);
  const failed: string[] = [];
  let finished = 0;
  await inParallel(todo, jobs, async (r) => {
    const f = runFiles(dir, r);
    log(`run ${r.id} started (log: ${f.log})`);
    const code = await runCli(['experiment', 'run-one', dir, '--index', String(r.index)], f.log, env);
    finished++;
    const res = readRunResult(dir, r);
    // Exit 0 without a result.json is a failure too: the report has no scores of the run.
    if (code !== 0 || !res) failed.push(r.id);
    log(`run ${r.id} ${code === 0 && res ? `done: test SSIML ${res.test.ssiml.toFixed(3)} MSE ${res.test.mse.toFixed(3)}` : `FAILED (exit ${code}${code === 0 ? ', no result.json' : ''})`} [${finished}/${todo.length}]`);
  });
  return failed;
}

async function execute(dir: string, plan: Plan, planState: ExperimentOutcome['planState'], x: ExecutionOptions): Promise<ExperimentOutcome> {
  const log = x.log ?? ((s: string) => process.stderr.write(s + '\n'));
  log(`${plan.experiment}: ${plan.runs.length} runs (${plan.swept.key} ${plan.swept.values.join(', ')} x seeds ${plan.seeds.join(', ')}), ${plan.decoder}; ${planState === 'new' ? 'new plan' : planState === 'more-seeds' ? 'more seeds for the folder\'s plan' : 'resuming'} in ${dir}`);
  if (x.dryRun) return { dir, plan, planState };
  // Parallel runs would each convert the FID network on first use and write its cache file at once:
  // convert it here, before any of them starts.
  inceptionModel(64);
  if (x.slurm) return { dir, plan, planState, submission: submitToSlurm(dir, plan, { jobs: x.jobs, sbatchArgs: x.sbatchArgs, log }) };
  const failed = await runLocally(dir, plan, Math.max(1, x.jobs ?? 1), log);
  const report = await writeExperimentReport(dir);
  if (failed.length) throw ccError('CC_ERR_EXPERIMENT', dir, `${failed.length} of ${plan.runs.length} runs failed (${failed.join(', ')}; see runs/<id>/log.txt); the report holds the others; rerun the same command to retry the failed ones`);
  return { dir, plan, planState, report };
}

/** `cortexcast experiment <name>`: plan (or check the folder's plan), then run or submit what is left. */
export async function startExperiment(o: ExperimentOptions, x: ExecutionOptions = {}): Promise<ExperimentOutcome> {
  const dir = resolve(o.out);
  const { state, plan } = writeOrCheckPlan(dir, buildPlan(o));
  return execute(dir, plan, state, x);
}

/** `cortexcast experiment resume DIR`: go on with the folder's own plan. */
export async function resumeExperiment(dir: string, x: ExecutionOptions = {}): Promise<ExperimentOutcome> {
  const abs = resolve(dir);
  return execute(abs, readPlan(abs), 'same', x);
}
