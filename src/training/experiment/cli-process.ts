import { spawn } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The cortexcast CLI that child processes and Slurm tasks run (the same checkout as this process). */
export const CLI_SCRIPT = fileURLToPath(new URL('../../../bin/cortexcast.js', import.meta.url));
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** Run `cortexcast <args>` as a child process, its stdout and stderr appended to `logFile`; resolves with the exit code. */
export function runCli(args: string[], logFile: string, env: NodeJS.ProcessEnv): Promise<number> {
  mkdirSync(dirname(logFile), { recursive: true });
  const log = createWriteStream(logFile, { flags: 'a' });
  log.write(`\n# ${new Date().toISOString()} cortexcast ${args.join(' ')}\n`);
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [CLI_SCRIPT, ...args], { cwd: REPO_ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.pipe(log, { end: false });
    child.stderr.pipe(log, { end: false });
    child.on('error', fail);
    child.on('close', (code, signal) => {
      log.end(`# exit ${code ?? signal}\n`);
      done(code ?? 1);
    });
  });
}

/** Run `work` over `items`, at most `jobs` at a time, in order of start. */
export async function inParallel<T>(items: T[], jobs: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const lane = async (): Promise<void> => {
    while (next < items.length) await work(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(jobs, items.length) }, lane));
}
