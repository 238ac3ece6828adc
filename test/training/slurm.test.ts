import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { cpus, hostname, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultCacheDir } from '../../src/training/eval/metrics/inception.js';
import { resumeExperiment, startExperiment } from '../../src/training/experiment/experiment.js';
import { readPlan } from '../../src/training/experiment/plan.js';
import { readRunStatus, runOne } from '../../src/training/experiment/run-one.js';
import { readSubmissions } from '../../src/training/experiment/slurm.js';
import { experimentProgress } from '../../src/training/experiment/status.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

/**
 * `cortexcast experiment --slurm` against a real Slurm: a single-node cluster (munged, slurmctld and
 * slurmd on localhost, Debian's slurm-wlm and munge) started in a temp folder by this test, a
 * two-run tiny experiment submitted to it, and its results read back. Needs root (slurmd launches
 * the jobs) and the packages; skipped loudly otherwise.
 */
const DAEMONS = ['munged', 'mungekey', 'slurmctld', 'slurmd', 'sbatch', 'squeue', 'scontrol', 'sinfo'];
const found = (cmd: string): boolean => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
const missing = DAEMONS.filter((c) => !found(c));
const whyNot =
  process.platform !== 'linux'
    ? 'the single-node Slurm test runs on Linux only'
    : missing.length
      ? `${missing.join(', ')} not found (apt-get install -y slurm-wlm munge)`
      : process.getuid?.() !== 0
        ? 'slurmd must run as root to launch jobs; run the tests as root'
        : undefined;

const freePort = (): Promise<number> =>
  new Promise((done, fail) => {
    const s = createServer();
    s.once('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => done(port));
    });
  });

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A throwaway cluster: config, keys, state and logs under one temp folder. */
class LocalSlurm {
  readonly env: NodeJS.ProcessEnv;
  private constructor(readonly dir: string) {
    this.env = { ...process.env, SLURM_CONF: join(dir, 'slurm.conf') };
  }

  static async start(): Promise<LocalSlurm> {
    const dir = mkdtempSync(join(tmpdir(), 'cc-slurm-'));
    chmodSync(dir, 0o755);
    const c = new LocalSlurm(dir);
    for (const d of ['munge', 'state', 'spool', 'log']) mkdirSync(join(dir, d));
    const key = join(dir, 'munge', 'munge.key');
    execFileSync('mungekey', ['--create', `--keyfile=${key}`]);
    chmodSync(key, 0o400);
    // munged refuses root without --force; its socket folder must be readable by everyone.
    execFileSync('munged', ['--force', `--socket=${c.socket}`, `--key-file=${key}`, `--log-file=${join(dir, 'log/munged.log')}`, `--pid-file=${join(dir, 'munge/munged.pid')}`, `--seed-file=${join(dir, 'munge/seed')}`]);
    const [ctld, slurmd] = [await freePort(), await freePort()];
    const node = hostname().split('.')[0];
    writeFileSync(
      join(dir, 'slurm.conf'),
      [
        'ClusterName=cortexcast-test',
        `SlurmctldHost=${node}(127.0.0.1)`,
        `SlurmctldPort=${ctld}`,
        `SlurmdPort=${slurmd}`,
        'AuthType=auth/munge',
        `AuthInfo=socket=${c.socket}`,
        'CredType=cred/munge',
        'SlurmUser=root',
        'SlurmdUser=root',
        `StateSaveLocation=${join(dir, 'state')}`,
        `SlurmdSpoolDir=${join(dir, 'spool')}`,
        `SlurmctldPidFile=${join(dir, 'slurmctld.pid')}`,
        `SlurmdPidFile=${join(dir, 'slurmd.pid')}`,
        `SlurmctldLogFile=${join(dir, 'log/slurmctld.log')}`,
        `SlurmdLogFile=${join(dir, 'log/slurmd.log')}`,
        // No cgroups in a container: track processes by parent, no task confinement.
        'ProctrackType=proctrack/linuxproc',
        'TaskPlugin=task/none',
        'MpiDefault=none',
        'JobAcctGatherType=jobacct_gather/none',
        'AccountingStorageType=accounting_storage/none',
        'SchedulerType=sched/backfill',
        'SelectType=select/cons_tres',
        'SelectTypeParameters=CR_Core',
        'ReturnToService=2',
        `NodeName=${node} NodeAddr=127.0.0.1 CPUs=${cpus().length} State=UNKNOWN`,
        'PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP',
        '',
      ].join('\n'),
    );
    execFileSync('slurmctld', ['-c', '-f', c.env.SLURM_CONF!], { env: c.env });
    execFileSync('slurmd', ['-f', c.env.SLURM_CONF!], { env: c.env });
    for (let i = 0; i < 60; i++) {
      const state = spawnSync('sinfo', ['-h', '-o', '%T'], { env: c.env, encoding: 'utf8' }).stdout.trim();
      if (state === 'idle') return c;
      await sleep(500);
    }
    throw new Error(`the test cluster's node did not become idle; see ${join(dir, 'log')}`);
  }

  get socket(): string {
    return join(this.dir, 'munge', 'munge.sock');
  }

  queue(): string[] {
    return spawnSync('squeue', ['-h', '-o', '%i %T'], { env: this.env, encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
  }

  /** scontrol shutdown stops slurmctld and slurmd; whatever survives is ended by its pid file. */
  async stop(): Promise<void> {
    spawnSync('scontrol', ['shutdown'], { env: this.env });
    spawnSync('munged', ['--stop', `--socket=${this.socket}`]);
    await sleep(1000);
    for (const f of ['slurmctld.pid', 'slurmd.pid', 'munge/munged.pid']) {
      const p = join(this.dir, f);
      if (!existsSync(p)) continue;
      const pid = Number(readFileSync(p, 'utf8'));
      try {
        if (pid > 0) process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

describe('cortexcast experiment --slurm (single-node cluster on localhost)', () => {
  if (whyNot) {
    console.warn(`\n*** SKIPPING the Slurm test: ${whyNot}. The --slurm path is NOT tested here. ***\n`);
    it.skip(`submits a two-run experiment to a local Slurm cluster (skipped: ${whyNot})`, () => undefined);
    return;
  }
  let cluster: LocalSlurm | undefined;
  let data: string;
  const savedConf = process.env.SLURM_CONF;
  beforeAll(async () => {
    data = await tinyDataset();
    cluster = await LocalSlurm.start();
    // sbatch (called by the code under test) and the jobs it starts read the cluster from here.
    process.env.SLURM_CONF = cluster.env.SLURM_CONF;
  }, 120_000);
  afterAll(async () => {
    if (savedConf === undefined) delete process.env.SLURM_CONF;
    else process.env.SLURM_CONF = savedConf;
    await cluster?.stop();
  }, 60_000);

  it('runs a two-run tiny experiment as an array job (one task per run) and makes the report in a dependent job', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'cc-slurm-exp-')), 'exp');
    const lines: string[] = [];
    const r = await startExperiment({ name: 'data-scaling', data: [data], out, decoder: 'ridge', seeds: 1, grid: ['100', '240'] }, { slurm: true, jobs: 2, log: (s) => void lines.push(s) });
    const sub = r.submission!;
    expect(sub.prepare).toBeUndefined();
    expect(sub.runIndices).toEqual([0, 1]);
    expect(readSubmissions(out)).toEqual([sub]);
    const runsScript = readFileSync(join(out, 'slurm/runs.sbatch'), 'utf8');
    expect(runsScript).toContain("'experiment' 'run-one'");
    // The tasks run in the checkout; the cache they read is the submitter's, named absolutely.
    expect(runsScript).toContain(`export CORTEXCAST_CACHE='${resolve(defaultCacheDir())}'`);

    // The report job depends on the array, so its results.csv is the last file the cluster writes.
    const deadline = Date.now() + 240_000;
    while (Date.now() < deadline && (cluster!.queue().length || !existsSync(join(out, 'figure.png')))) await sleep(1000);
    expect(cluster!.queue(), `still queued; logs in ${join(out, 'slurm/logs')}`).toEqual([]);
    const rows = readFileSync(join(out, 'results.csv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split(','));
    expect(rows.map((x) => [x[3], x[6]])).toEqual([
      ['100', 'done'],
      ['240', 'done'],
    ]);
    // Each run ran in its own array task of the runs job.
    const plan = readPlan(out);
    expect(plan.runs.map((run) => readRunStatus(out, run)?.slurmJob)).toEqual([`${sub.runs}_0`, `${sub.runs}_1`]);
    expect(readFileSync(join(out, 'slurm/logs/run-1.out'), 'utf8')).toMatch(/run train-240-seed1: test SSIML/);
    expect(existsSync(join(out, 'figure.svg')) && existsSync(join(out, 'reconstructions.png'))).toBe(true);
    const p = experimentProgress(out);
    expect(p.counts.done).toBe(2);
    expect(p.slurmJobs).toEqual([sub.runs, sub.report]);

    // Resubmitting a finished plan submits nothing.
    const again = await startExperiment({ name: 'data-scaling', data: [data], out, decoder: 'ridge', seeds: 1, grid: ['100', '240'] }, { slurm: true, log: (s) => void lines.push(s) });
    expect(again.submission).toBeUndefined();
    expect(lines).toContain('every run is done; nothing to submit');

    // A run whose task of an earlier submission is still queued (a held job stands in) is not submitted
    // again, and run-one refuses it: two tasks would train into one checkpoint.
    const held = spawnSync('sbatch', ['--parsable', '--hold', '--wrap', 'sleep 60'], { env: cluster!.env, encoding: 'utf8' }).stdout.trim().split(';')[0];
    expect(held).toMatch(/^\d+$/);
    try {
      const run = plan.runs[1];
      rmSync(join(out, run.dir, 'result.json'));
      writeFileSync(join(out, run.dir, 'status.json'), JSON.stringify({ state: 'running', host: 'elsewhere', pid: 1, slurmJob: held, startedAt: new Date().toISOString() }));
      const busy: string[] = [];
      const third = await startExperiment({ name: 'data-scaling', data: [data], out, decoder: 'ridge', seeds: 1, grid: ['100', '240'] }, { slurm: true, log: (s) => void busy.push(s) });
      expect(third.submission).toBeUndefined();
      expect(busy).toContain(`slurm: 1 run(s) still running or queued in earlier jobs, not submitted again: train-240-seed1 (${held})`);
      expect(readSubmissions(out)).toHaveLength(1);
      await expect(runOne(out, 1, { quiet: true, log: () => undefined })).rejects.toThrow(new RegExp(`CC_ERR_EXPERIMENT: .*run train-240-seed1 is running already as Slurm job ${held} on elsewhere`));
    } finally {
      spawnSync('scancel', [held], { env: cluster!.env });
    }
  }, 300_000);

  it('more seeds while the first array is still queued: only the added runs are submitted, with their plan indices', async () => {
    const out = join(mkdtempSync(join(tmpdir(), 'cc-slurm-exp-')), 'exp');
    const options = { name: 'data-scaling' as const, data: [data], out, decoder: 'ridge' as const, grid: ['100', '240'] };
    // Held: the first array's tasks stay pending, with no status.json, while the plan grows.
    const first = (await startExperiment({ ...options, seeds: 1 }, { slurm: true, sbatchArgs: ['--hold'], log: () => undefined })).submission!;
    const jobs = [first.runs!, first.report];
    try {
      const tasks = spawnSync('squeue', ['-h', '-r', '-o', '%i'], { env: cluster!.env, encoding: 'utf8' }).stdout.split('\n');
      expect(tasks).toEqual(expect.arrayContaining([`${first.runs}_0`, `${first.runs}_1`]));
      const lines: string[] = [];
      const r = await startExperiment({ ...options, seeds: 2 }, { slurm: true, sbatchArgs: ['--hold'], log: (s) => void lines.push(s) });
      jobs.push(r.submission!.runs!, r.submission!.report);
      expect(r.planState).toBe('more-seeds');
      expect(lines).toContain(`slurm: 2 run(s) still running or queued in earlier jobs, not submitted again: train-100-seed1 (${first.runs}_0), train-240-seed1 (${first.runs}_1)`);
      expect(r.submission!.runIndices).toEqual([2, 3]);
      expect(readPlan(out).runs.map((x) => [x.index, x.id])).toEqual([
        [0, 'train-100-seed1'],
        [1, 'train-240-seed1'],
        [2, 'train-100-seed2'],
        [3, 'train-240-seed2'],
      ]);
      expect(readFileSync(join(out, 'slurm/runs.sbatch'), 'utf8')).toContain("'--index' \"$SLURM_ARRAY_TASK_ID\"");
      expect(readSubmissions(out).map((s) => s.runIndices)).toEqual([
        [0, 1],
        [2, 3],
      ]);
    } finally {
      spawnSync('scancel', jobs, { env: cluster!.env });
    }
  }, 120_000);

  it('a failed preparation cancels the runs array instead of leaving it pending, so the report job still runs', async () => {
    const copy = join(mkdtempSync(join(tmpdir(), 'cc-slurm-data-')), 'data');
    cpSync(data, copy, { recursive: true });
    const out = join(mkdtempSync(join(tmpdir(), 'cc-slurm-exp-')), 'exp');
    const options = { name: 'data-scaling' as const, data: [copy], out, seeds: 1, grid: ['100'], maxSteps: 1, encoderMaxSteps: 1, meiNeurons: 4, meiSteps: 1 };
    await startExperiment(options, { dryRun: true, log: () => undefined });
    // The encoder behind the MEIs cannot read its responses: the preparation task fails.
    rmSync(join(copy, 'data/responses/7.npy'));
    const sub = (await resumeExperiment(out, { slurm: true, log: () => undefined })).submission!;
    expect(sub.prepare && sub.runs).toBeTruthy();
    const deadline = Date.now() + 180_000;
    while (Date.now() < deadline && (cluster!.queue().length || !existsSync(join(out, 'results.csv')))) await sleep(1000);
    expect(cluster!.queue(), `still queued; logs in ${join(out, 'slurm/logs')}`).toEqual([]);
    expect(readFileSync(join(out, 'slurm/logs/prepare-0.out'), 'utf8')).toMatch(/CC_ERR_DATASET_MISSING/);
    expect(readFileSync(join(out, 'results.csv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split(',')[6])).toEqual(['pending']);
  }, 240_000);
});

/**
 * The #SBATCH lines of the written batch scripts, read the way sbatch reads them (src/sbatch/opt.c,
 * _get_argument: whitespace splits, ' or " group, a backslash takes the next character literally,
 * an unquoted # starts a comment) and then as a Slurm filename pattern (%% is a literal %). Runs
 * without Slurm.
 */
function sbatchArguments(line: string): string[] {
  const args: string[] = [];
  let i = line.indexOf('#SBATCH') + '#SBATCH'.length;
  for (;;) {
    while (i < line.length && /\s/.test(line[i])) i++;
    if (i >= line.length) return args;
    let arg = '';
    let quote = '';
    let escaped = false;
    for (; i < line.length && (quote || !/\s/.test(line[i])); i++) {
      const c = line[i];
      if (escaped) escaped = false;
      else if (c === '\\') {
        escaped = true;
        continue;
      } else if (quote) {
        if (c === quote) {
          quote = '';
          continue;
        }
      } else if (c === '"' || c === "'") {
        quote = c;
        continue;
      } else if (c === '#') return args;
      arg += c;
    }
    args.push(arg);
  }
}
const slurmPattern = (p: string, arrayTask: number): string => p.replace(/%(%|a)/g, (_, c: string) => (c === '%' ? '%' : String(arrayTask)));

describe('Slurm batch scripts: the experiment folder in #SBATCH lines', () => {
  it('spaces, %, #, quotes and backslashes in the folder survive sbatch parsing; --output names that exact folder', async () => {
    const { batchScript } = await import('../../src/training/experiment/slurm.js');
    for (const dir of ['/data/my exp/slurm/logs', '/data/50% done/slurm/logs', '/data/a#b/"q"/back\\slash/it\'s/logs', '/data/%j/logs']) {
      const script = batchScript('cc-exp 1-runs', ['experiment', 'run-one', '/x'], { dir, file: 'run-%a.out' });
      const lines = script.split('\n').filter((l) => l.startsWith('#SBATCH'));
      expect(lines).toHaveLength(2);
      expect(sbatchArguments(lines[0])).toEqual(['--job-name=cc-exp 1-runs']);
      const out = sbatchArguments(lines[1]);
      expect(out).toHaveLength(1);
      expect(out[0].startsWith('--output=')).toBe(true);
      // Slurm expands %a to the task id and %% to %: the log lands in the folder as named.
      expect(slurmPattern(out[0].slice('--output='.length), 3)).toBe(`${dir}/run-3.out`);
      // bash reads the same lines as comments: the script still parses.
      expect(spawnSync('bash', ['-n'], { input: script }).status).toBe(0);
    }
  });

  it('a folder name with a newline is refused with CC_ERR_EXPERIMENT (it would end the #SBATCH line)', async () => {
    const { batchScript } = await import('../../src/training/experiment/slurm.js');
    expect(() => batchScript('cc-x', ['report'], { dir: '/data/two\nlines/logs', file: 'report.out' })).toThrow(/^CC_ERR_EXPERIMENT: .*newline/);
    expect(() => batchScript('cc-x\r', ['report'], { dir: '/data/logs', file: 'report.out' })).toThrow(/^CC_ERR_EXPERIMENT: .*newline/);
  });
});
