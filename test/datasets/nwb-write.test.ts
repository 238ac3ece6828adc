import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { DecoderConnection } from '../../clients/lib/index.js';
import { recordNwb } from '../../clients/record/record-nwb.js';
import { loadNwbSupport, openDataset } from '../../src/datasets/dataset-source.js';
import { readNwbRecording } from '../../src/datasets/nwb-read.js';
import { loadServerConfig } from '../../src/server/config.js';
import { CortexcastServer } from '../../src/server/server.js';
import { synthesizeContinuous, DEFAULT_CONTINUOUS } from '../../src/training/data/continuous-sim.js';
import { SYNTH_PRESETS } from '../../src/training/data/synth.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { checkNwb, pythonH5py, writeNwbFixture } from '../helpers/nwb.js';
import { PY } from '../helpers/python.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

const HAS_H5PY = pythonH5py('NWB writer tests (h5py reads the files back and checks them against the NWB schema)');
const d = HAS_H5PY ? describe : describe.skip;

let tmp: string;
beforeAll(async () => {
  tmp = mkdtempSync(join(tmpdir(), 'cc-nwbw-'));
  await loadNwbSupport();
});

/** Run Python with h5py on `file`; the script prints JSON. */
function h5py(file: string, script: string): unknown {
  const r = spawnSync(PY, ['-c', `import h5py, json, numpy as np, sys\nf = h5py.File(sys.argv[1], 'r')\n${script}`, file], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout);
}

const pearson = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < a.length; i++) (ma += a[i] / a.length), (mb += b[i] / b.length);
  let ab = 0;
  let aa = 0;
  let bb = 0;
  for (let i = 0; i < a.length; i++) (ab += (a[i] - ma) * (b[i] - mb)), (aa += (a[i] - ma) ** 2), (bb += (b[i] - mb) ** 2);
  return ab / Math.sqrt(aa * bb);
};

d('NWB writer', () => {
  it('the schema check passes the independent fixture and catches a broken file', async () => {
    const sensorium = await tinyDataset({ trainTrials: 20, validationTrials: 4, testImages: 2, repeats: 2 }, 10);
    expect(checkNwb(writeNwbFixture(sensorium, join(tmp, 'fixture.nwb')))).toBe('');
    expect(checkNwb(writeNwbFixture(sensorium, join(tmp, 'bad-ts.nwb'), '--break', 'timestamps-length'))).toMatch(/timestamps: has \d+ values, data has \d+/);
    expect(checkNwb(writeNwbFixture(sensorium, join(tmp, 'bad-root.nwb'), '--break', 'not-nwb'))).toMatch(/root neurodata_type must be NWBFile/);
  }, 120_000);

  it('synth --nwb: a valid NWB file whose traces carry the stimulus (repeats agree more than different images)', async () => {
    const file = join(tmp, 'sim.nwb');
    const cfg = { ...SYNTH_PRESETS.tiny, trainTrials: 60, validationTrials: 10, testImages: 6, repeats: 3, simulator: { ...SYNTH_PRESETS.tiny.simulator, neurons: 150 } };
    const r = await synthesizeContinuous(file, cfg, { ...DEFAULT_CONTINUOUS, rate: 15 }, { quiet: true });
    expect(r.presentations).toBe(60 + 10 + 18);
    expect(checkNwb(file)).toBe('');
    const facts = h5py(file, `print(json.dumps({'version': f.attrs['nwb_version'], 'shape': list(f['processing/ophys/DfOverF/RoiResponseSeries/data'].shape), 'rate': float(f['processing/ophys/DfOverF/RoiResponseSeries/starting_time'].attrs['rate']), 'tiers': sorted(set(x.decode() if isinstance(x, bytes) else x for x in f['intervals/stimulus_presentations/tier'][()])), 'templates': len(f['stimulus/templates/StimulusImages/order_of_images'])}))`);
    expect(facts).toEqual({ version: '2.7.0', shape: [r.frames, 150], rate: 15, tiers: ['test', 'train', 'validation'], templates: 60 + 10 + 6 });
    const rec = readNwbRecording(file);
    expect(rec.rate).toBe(15);
    expect(rec.presentations.every((p) => Math.abs(p.stop - p.start - 0.5) < 1e-9)).toBe(true);
    const gaps = rec.presentations.slice(1).map((p, i) => p.start - rec.presentations[i].stop);
    expect(Math.min(...gaps)).toBeGreaterThanOrEqual(0.3 - 1e-9);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(0.5 + 1e-9);
    const ds = openDataset(file);
    // The default window follows the simulated indicator (rise 50 ms, decay 400 ms, 0.5 s stimuli):
    // it starts once the response has risen half way (200-400 ms) and lasts about the stimulus.
    const w = ds.responseWindow!;
    expect(w.rateHz).toBe(15);
    expect(w.lagFrames).toBeGreaterThanOrEqual(3);
    expect(w.lagFrames).toBeLessThanOrEqual(6);
    expect(w.lengthFrames).toBeGreaterThanOrEqual(6);
    expect(w.lengthFrames).toBeLessThanOrEqual(9);
    const test = ds.indices('test');
    const same: number[] = [];
    const other: number[] = [];
    for (const i of test)
      for (const j of test) if (i < j) (ds.imageIds[i] === ds.imageIds[j] ? same : other).push(pearson(ds.trial(i).responses, ds.trial(j).responses));
    const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
    expect(mean(same)).toBeGreaterThan(mean(other) + 0.1);
  }, 180_000);

  it('record --nwb: decoded frames, stimuli, latency stages and the served model, valid and read back by h5py', async () => {
    const sensorium = await tinyDataset({}, 60);
    const bundle = join(tmp, 'ridge');
    await trainRidge({ data: sensorium, out: bundle, quiet: true, log: () => undefined });
    const server = await new CortexcastServer(loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'ridge', path: bundle }], shutdownGraceMs: 500 } }), () => undefined).start();
    const file = join(tmp, 'session.nwb');
    let next: (() => void) | undefined;
    const advance = (): void => next?.();
    const subscribed = new Promise<void>((resolve) => (next = resolve));
    const rec = recordNwb({ server: `http://127.0.0.1:${server.httpPort}`, file, stream: 'rig', model: 'ridge', maxFrames: 6, onSubscribed: advance, onFrame: advance });
    await subscribed;
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const s = conn.openStream();
    const frames = Array.from({ length: 6 }, (_, k) => Float32Array.from({ length: 60 }, (_, i) => ((i * (k + 3)) % 17) / 4));
    const stimuli = [0, 1, 0, 2, 1, 0].map((id) => ({ id, pixels: Uint8Array.from({ length: 16 * 9 }, (_, i) => (i * (id + 1)) % 256) }));
    for (let k = 0; k < 6; k++) {
      const got = new Promise<void>((resolve) => (next = resolve));
      s.send({ streamId: 'rig', model: 'ridge', sequence: k + 1, responses: frames[k], imageId: stimuli[k].id, stimulus: { width: 16, height: 9, pixels: stimuli[k].pixels } });
      await got;
    }
    const r = await rec;
    s.end();
    expect(r.frames).toBe(6);
    const direct = await conn.decode('ridge', frames[3]);
    conn.close();
    await server.close();

    expect(checkNwb(file)).toBe('');
    const got = h5py(
      file,
      `g = lambda p: f[p][()]
txt = lambda v: v.decode() if isinstance(v, bytes) else v
print(json.dumps({
  'required': all(k in f for k in ['identifier', 'session_description', 'session_start_time', 'timestamps_reference_time', 'file_create_date']),
  'root': [txt(f.attrs[k]) for k in ['nwb_version', 'namespace', 'neurodata_type']],
  'decoded': list(f['acquisition/decoded_rig_ridge/data'].shape),
  'frame3': f['acquisition/decoded_rig_ridge/data'][3].reshape(-1).tolist(),
  'times': bool(np.all(np.diff(g('acquisition/decoded_rig_ridge/timestamps')) >= 0)),
  'index': g('stimulus/presentation/stimulus_rig/data').tolist(),
  'template2': f['stimulus/templates/stimuli_rig/image_2'][()].reshape(-1).tolist(),
  'seq': g('analysis/latency/seq').tolist(),
  'stages': bool(np.all(g('analysis/latency/decode_end_ms') >= g('analysis/latency/ingested_ms'))),
  'model': [txt(x) for x in g('analysis/served_models/name')],
  'window': [float(g('analysis/served_models/window_length_frames')[0]), float(g('analysis/served_models/window_lag_frames')[0])],
  'notes': json.loads(txt(g('general/notes')))['models'][0]['name'],
}))`,
    ) as Record<string, unknown>;
    expect(got.required).toBe(true);
    expect(got.root).toEqual(['2.7.0', 'core', 'NWBFile']);
    expect(got.decoded).toEqual([6, 36, 64]);
    expect(got.frame3).toEqual(Array.from(direct.pixels));
    expect(got.times).toBe(true);
    // Distinct stimuli become templates in order of first appearance: ids 0, 1, 0, 2, 1, 0.
    expect(got.index).toEqual([0, 1, 0, 2, 1, 0]);
    expect(got.template2).toEqual(Array.from(stimuli[3].pixels));
    expect(got.seq).toEqual([1, 2, 3, 4, 5, 6]);
    expect(got.stages).toBe(true);
    expect(got.model).toEqual(['ridge']);
    expect(got.window).toEqual([1, 0]);
    expect(got.notes).toBe('ridge');
  }, 180_000);
});
