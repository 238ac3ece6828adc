import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync, openSync, fsyncSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { grpcStream } from './grpc-stream.js';
import { grpcUnary } from './grpc-unary.js';
import { h2Raw } from './h2-raw.js';
import { http } from './http.js';
import { oip } from './oip.js';
import { REPO } from './server.js';
import type { FuzzTarget, KeptInput, Outcome, Surface } from './types.js';
import { websocket } from './websocket.js';

/** Every fuzzed surface, in the order the fuzzer takes turns. */
export const SURFACES: Surface<unknown>[] = [grpcStream, grpcUnary, oip, h2Raw, http, websocket] as Surface<unknown>[];

export const surfaceNamed = (name: string): Surface<unknown> => {
  const s = SURFACES.find((x) => x.name === name);
  if (!s) throw new Error(`no fuzz surface '${name}' (surfaces: ${SURFACES.map((x) => x.name).join(', ')})`);
  return s;
};

export const REGRESSIONS_DIR = join(REPO, 'test', 'server', 'fuzz-regressions');

/** Keep a failing input (atomically: temp file, fsync, rename); the file name is its surface and a hash of the input. */
export function keepInput(k: KeptInput, dir = REGRESSIONS_DIR): string {
  mkdirSync(dir, { recursive: true });
  const hash = createHash('sha256').update(JSON.stringify(k.input)).digest('hex').slice(0, 12);
  const file = join(dir, `${k.surface}-${hash}.json`);
  if (existsSync(file)) return file;
  const tmp = `${file}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(k, null, 2) + '\n');
  const fd = openSync(tmp, 'r');
  fsyncSync(fd);
  closeSync(fd);
  renameSync(tmp, file);
  return file;
}

export function keptInputs(dir = REGRESSIONS_DIR): { file: string; kept: KeptInput }[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((f) => ({ file: f, kept: JSON.parse(readFileSync(join(dir, f), 'utf8')) as KeptInput }));
}

/** One kept input against a running server: what it did, and whether the process lived through it. */
export async function replay(k: KeptInput, t: FuzzTarget): Promise<Outcome & { alive: boolean }> {
  const out = await surfaceNamed(k.surface).run(k.input, t);
  // A crash may land a moment after the answer (a timer, a later write): give it that moment.
  await new Promise((r) => setTimeout(r, 200));
  return { ...out, alive: t.alive() };
}
