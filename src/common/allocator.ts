import { spawn } from 'node:child_process';
import { constants } from 'node:os';

/**
 * glibc malloc settings for training processes: never hand large blocks to mmap (`mmap_max=0`) and never
 * trim the heap (`trim_threshold` 64 GiB), so a freed gigabyte block is reused by the next step instead
 * of going back to the kernel.
 *
 * Why: onnxruntime-node copies every graph output, pre-allocated or not, into a fresh ArrayBuffer. A
 * training step of the paper CNN returns its 1.3 GB readin gradient, so glibc maps and unmaps 1.3 GB per
 * step, and each fresh page faults again. On this project's VM a first touch costs ~4 s per 1.3 GB
 * (`bench:train`, paper CNN at batch 16: 15.3 s -> 9.8 s per step). The cost is a heap that keeps its peak,
 * which a training process reaches in its first steps anyway.
 */
export const TRAINING_MALLOC_TUNABLES = 'glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736';

/** glibc's version when this Node runs on glibc (musl and other platforms: undefined). */
function glibcVersion(): string | undefined {
  if (process.platform !== 'linux') return undefined;
  const header = (process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
  return header?.glibcVersionRuntime;
}

/**
 * The environment a training process should run with, or undefined when it needs no change: not glibc,
 * the user opted out (`CORTEXCAST_ALLOCATOR=system`), or GLIBC_TUNABLES already sets mmap_max.
 */
export function trainingAllocatorEnv(env: NodeJS.ProcessEnv = process.env, glibc: string | null = glibcVersion() ?? null): NodeJS.ProcessEnv | undefined {
  if (!glibc || env.CORTEXCAST_ALLOCATOR === 'system') return undefined;
  const current = env.GLIBC_TUNABLES ?? '';
  if (current.includes('glibc.malloc.mmap_max')) return undefined;
  return { ...env, GLIBC_TUNABLES: current ? `${current}:${TRAINING_MALLOC_TUNABLES}` : TRAINING_MALLOC_TUNABLES };
}

/**
 * Run `args` under node again with `env` (glibc reads GLIBC_TUNABLES only at process start), passing
 * stdio through; resolves to the exit code. Ctrl-C reaches the child from the terminal directly, so the
 * parent ignores SIGINT and forwards SIGTERM.
 */
export function relaunch(args: readonly string[], env: NodeJS.ProcessEnv): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...process.execArgv, ...args], { stdio: 'inherit', env });
    const ignore = (): void => {};
    const forward = (): void => void child.kill('SIGTERM');
    process.on('SIGINT', ignore);
    process.on('SIGTERM', forward);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      process.off('SIGINT', ignore);
      process.off('SIGTERM', forward);
      resolve(code ?? 128 + (signal ? constants.signals[signal] : 0));
    });
  });
}
