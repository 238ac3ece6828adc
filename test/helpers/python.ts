import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

/** Debian's python3: the one apt installs grpcio, grpc-tools, numpy and onnx for. */
export const PY = '/usr/bin/python3';

/** True when Debian's Python has grpcio, grpc-tools and numpy; otherwise warns loudly (the caller skips). */
export function pythonGrpc(what: string): boolean {
  if (spawnSync(PY, ['-c', 'import grpc, grpc_tools, numpy'], { stdio: 'ignore' }).status === 0) return true;
  console.warn(`SKIPPED: ${what} - python3-grpcio / python3-grpc-tools / python3-numpy not installed (apt-get install python3-grpcio python3-grpc-tools python3-numpy)`);
  return false;
}

/** Python modules for proto files under proto/, generated with grpc-tools into a fresh folder (PYTHONPATH). */
export function protocPython(...protos: string[]): { dir: string; stderr: string } {
  const dir = mkdtempSync(join(tmpdir(), 'cc-pygen-'));
  const r = spawnSync(PY, ['-m', 'grpc_tools.protoc', '-I', join(repoRoot, 'proto'), `--python_out=${dir}`, `--grpc_python_out=${dir}`, ...protos], { encoding: 'utf8', cwd: repoRoot });
  return { dir, stderr: r.stderr };
}
