import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { npyNumbers, readNpy } from '../../src/common/npy.js';
import type { FrameCounters, FuzzTarget } from './types.js';

/**
 * The server under fuzzing: `cortexcast serve` as a child process (so a crash is an exit we can see),
 * on a ridge bundle trained on the tiny preset, with short timers so that a well-behaved server
 * answers every fuzz input within its deadline, and a token so that auth is on the fuzzed path.
 */
export const REPO = fileURLToPath(new URL('../..', import.meta.url));
export const MODEL = 'ridge';
export const TOKEN = 'fuzz-token-0123456789abcdef';

/** The fuzz configuration; the regression test starts its server with the same. */
export const FUZZ_CONFIG = {
  shutdownGraceMs: 2000,
  auth: { token: TOKEN, protectHttp: true },
  limits: { requestTimeoutMs: 1000, handshakeTimeoutMs: 1000, streamIdleMs: 2000, connectionIdleMs: 2000 },
};

function cli(args: string[]): void {
  const r = spawnSync(process.execPath, ['bin/cortexcast.js', ...args], { cwd: REPO, stdio: ['ignore', 'ignore', 'inherit'] });
  if (r.status !== 0) throw new Error(`cortexcast ${args.join(' ')} exited ${r.status}`);
}

/** A tiny simulated dataset and a ridge bundle trained on it, through the CLI, in a fresh temp folder. */
export function trainTinyBundle(): string {
  const dir = mkdtempSync(join(tmpdir(), 'cortexcast-fuzz-'));
  cli(['synth', '--tiny', '--out', join(dir, 'data'), '--force']);
  cli(['train', 'ridge', '--data', join(dir, 'data'), '--out', join(dir, 'ridge')]);
  return join(dir, 'ridge');
}

export function bundleUnitIds(bundle: string): number[] {
  const manifest = JSON.parse(readFileSync(join(bundle, 'manifest.json'), 'utf8')) as { input: { unitIdsFile: string } };
  return Array.from(npyNumbers(readNpy(join(bundle, manifest.input.unitIdsFile))));
}

export interface ServerProcess {
  child: ChildProcess;
  pid: number;
  target: FuzzTarget;
  /** Set when the process exits. */
  exit?: { code: number | null; signal: NodeJS.Signals | null; expected: boolean };
  stderrTail: string[];
  /** level=error log lines by message: bugs the server caught without dying. */
  errors: Map<string, number>;
  stop: () => Promise<void>;
}

/** Prometheus text -> summed value of each metric name (all label sets together). */
export function parseCounters(text: string): FrameCounters {
  const sum = (name: string): number => {
    let v = 0;
    for (const line of text.split('\n')) if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) v += Number(line.slice(line.lastIndexOf(' ') + 1));
    return v;
  };
  return {
    received: sum('cortexcast_frames_received_total'),
    decoded: sum('cortexcast_frames_decoded_total'),
    dropped: sum('cortexcast_frames_dropped_total'),
    streams: sum('cortexcast_streams'),
    queued: sum('cortexcast_queue_depth'),
    busy: sum('cortexcast_worker_busy_ratio'),
  };
}

export async function startServer(bundle: string, workDir: string): Promise<ServerProcess> {
  const cfgFile = join(workDir, 'fuzz-server.json');
  writeFileSync(cfgFile, JSON.stringify(FUZZ_CONFIG, null, 2) + '\n');
  if (!existsSync(join(bundle, 'manifest.json'))) throw new Error(`no bundle at ${bundle}`);
  const child = spawn(process.execPath, ['bin/cortexcast.js', 'serve', '--config', cfgFile, '--model', `${MODEL}=${bundle}`, '--grpc-port', '0', '--http-port', '0'], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  // The server must not outlive whoever started it (an interrupted bench, a test worker torn down).
  const reap = (): void => void child.kill('SIGKILL');
  process.once('exit', reap);
  child.once('exit', () => process.off('exit', reap));
  const unitIds = bundleUnitIds(bundle);
  let stopRequested = false;
  const srv: ServerProcess = {
    child,
    pid: child.pid ?? 0,
    stderrTail: [],
    errors: new Map(),
    target: undefined as unknown as FuzzTarget,
    stop: async () => {
      if (srv.exit) return;
      stopRequested = true;
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await new Promise<void>((r) => (srv.exit ? r() : child.once('exit', () => r())));
      clearTimeout(killer);
    },
  };
  return new Promise((resolve, reject) => {
    // Both pipes drained always: a full stderr pipe would stall the server and look like a hang.
    child.stdout!.resume();
    createInterface({ input: child.stderr! }).on('line', (l) => {
      srv.stderrTail.push(l);
      if (srv.stderrTail.length > 60) srv.stderrTail.shift();
      let j: { level?: string; msg?: string; grpc?: string; http?: string; error?: unknown; rpc?: string } | undefined;
      try {
        j = l.startsWith('{') ? (JSON.parse(l) as typeof j) : undefined;
      } catch {
        j = undefined;
      }
      if (j?.level === 'error') {
        const first = String(j.error ?? '').split('\n')[0].slice(0, 160);
        const key = `${j.msg}${j.rpc ? ` (${j.rpc})` : ''}${first ? `: ${first}` : ''}`;
        srv.errors.set(key, (srv.errors.get(key) ?? 0) + 1);
      }
      if (j?.msg === 'serving' && j.grpc && j.http) {
        const grpcPort = Number(j.grpc.split(':').pop());
        const httpPort = Number(new URL(j.http).port);
        const http = `http://127.0.0.1:${httpPort}`;
        srv.target = {
          grpcPort,
          httpPort,
          token: TOKEN,
          model: MODEL,
          neurons: unitIds.length,
          unitIds,
          alive: () => !srv.exit,
          counters: async () => {
            const r = await fetch(`${http}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` }, signal: AbortSignal.timeout(5000) });
            return parseCounters(await r.text());
          },
        };
        resolve(srv);
      }
    });
    child.on('exit', (code, signal) => {
      srv.exit = { code, signal, expected: stopRequested };
      reject(new Error(`server exited ${code ?? signal} before serving:\n${srv.stderrTail.join('\n')}`));
    });
  });
}

/** VmRSS of a process in MB, from /proc (undefined where there is no /proc or the process is gone). */
export function rssMb(pid: number): number | undefined {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : undefined;
  } catch {
    return undefined;
  }
}
