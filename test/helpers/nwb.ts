import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './paths.js';
import { PY } from './python.js';

/** True when Debian's Python has h5py and numpy (the independent NWB writer and checker); otherwise warns loudly. */
export function pythonH5py(what: string): boolean {
  if (spawnSync(PY, ['-c', 'import h5py, numpy'], { stdio: 'ignore' }).status === 0) return true;
  console.warn(`SKIPPED: ${what} - python3-h5py / python3-numpy not installed (apt-get install python3-h5py python3-numpy)`);
  return false;
}

/** Write an NWB file from a SENSORIUM folder with test/helpers/nwb-fixture.py (h5py alone, no cortexcast code). */
export function writeNwbFixture(sensorium: string, out: string, ...args: string[]): string {
  const r = spawnSync(PY, [join(repoRoot, 'test/helpers/nwb-fixture.py'), '--sensorium', sensorium, '--out', out, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`nwb-fixture.py failed: ${r.stderr}`);
  return out;
}

/** Check an NWB file against the core schema's required parts (test/helpers/nwb-check.py); '' when valid, else the problems. */
export function checkNwb(file: string): string {
  const r = spawnSync(PY, [join(repoRoot, 'test/helpers/nwb-check.py'), file], { encoding: 'utf8' });
  return r.status === 0 ? '' : (r.stdout + r.stderr).trim();
}
