/**
 * `npm run bench:nwb`: reading an NWB file against reading the same trials in the SENSORIUM layout.
 * Writes a synthetic NWB session of the given size (bench/nwb/synthetic-session.py, h5py) into the
 * temp folder, then, one process per measurement: open it (read the traces and templates, cut the
 * trials, read every trial), `import nwb` it into a SENSORIUM folder, and open that folder and read
 * every trial - the reference. Prints seconds and peak RSS of each and the NWB / SENSORIUM ratios.
 *
 *   npm run bench:nwb -- [--frames 100000] [--rois 200] [--rate 30] [--images 118] [--image-size 918x1174]
 *                        [--stimulus 0.25] [--grey 0.25] [--gzip] [--repeats 1]
 *
 * The defaults are the size of an Allen Brain Observatory two-photon session (about an hour at 30 Hz,
 * ~200 ROIs, 118 natural scenes of 918 x 1174); a SENSORIUM-sized one is
 * `--frames 20000 --rois 8600 --rate 8 --images 2500 --image-size 144x256 --stimulus 0.5 --grey 0.4`.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const frames = arg('frames', '100000');
const rois = arg('rois', '200');
const rate = arg('rate', '30');
const images = arg('images', '118');
const [ih, iw] = arg('image-size', '918x1174').split('x');
const stimulus = arg('stimulus', '0.25');
const grey = arg('grey', '0.25');
const gzip = process.argv.includes('--gzip');
const repeats = Number(arg('repeats', '1'));
const here = fileURLToPath(new URL('.', import.meta.url));

const dir = mkdtempSync(join(tmpdir(), 'cc-bench-nwb-'));
const file = join(dir, 'session.nwb');
const t0 = performance.now();
const gen = spawnSync('/usr/bin/python3', [join(here, 'nwb/synthetic-session.py'), file, frames, rois, rate, images, ih, iw, stimulus, grey, gzip ? 'gzip' : 'contiguous'], { encoding: 'utf8' });
if (gen.status !== 0) throw new Error(`generator failed (needs python3-h5py): ${gen.stderr}`);
console.log(`# ${gen.stdout.trim().replace(file, 'session.nwb')}; ${(statSync(file).size / 2 ** 20).toFixed(0)} MB${gzip ? ' (gzip)' : ''}, written in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

interface Run {
  what: string;
  seconds: number;
  peakRssMB: number;
  trials: number;
  neurons: number;
}
const child = (...args: string[]): Run => {
  const r = spawnSync(process.execPath, [join(here, 'nwb/open-child.mjs'), ...args], { encoding: 'utf8', cwd: join(here, '..') });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Run;
};
const folder = join(dir, 'imported');
const rows: Run[][] = [];
for (let k = 0; k < repeats; k++) rows.push([child('nwb', file), child('import', file, folder), child('sensorium', folder)]);
const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const col = (i: number, key: 'seconds' | 'peakRssMB'): number => med(rows.map((r) => r[i][key]));
const first = rows[0];
console.log(`# ${first[0].trials} trials x ${first[0].neurons} ROIs; median of ${repeats} run(s), one process per measurement (each loads the code and h5wasm first, not timed)`);
console.log('measurement                                   seconds   peak RSS MB');
const line = (label: string, i: number): void => console.log(`${label.padEnd(44)} ${col(i, 'seconds').toFixed(2).padStart(8)}   ${col(i, 'peakRssMB').toFixed(0).padStart(8)}`);
line('open .nwb (read, cut trials, read every trial)', 0);
line('import nwb -> SENSORIUM folder', 1);
line('reference: open the folder, read every trial', 2);
console.log(`ratio NWB open / SENSORIUM open: time ${(col(0, 'seconds') / col(2, 'seconds')).toFixed(2)}, peak RSS ${(col(0, 'peakRssMB') / col(2, 'peakRssMB')).toFixed(2)}`);
rmSync(dir, { recursive: true, force: true });
