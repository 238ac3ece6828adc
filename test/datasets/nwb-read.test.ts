import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { configureNwbReading, loadNwbSupport, openDataset } from '../../src/datasets/dataset-source.js';
import { importNwb } from '../../src/datasets/nwb-import.js';
import { readNwbRecording } from '../../src/datasets/nwb-read.js';
import { SensoriumDataset } from '../../src/datasets/sensorium.js';
import { loadBundle } from '../../src/models/bundle.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { pythonH5py, writeNwbFixture } from '../helpers/nwb.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

const HAS_H5PY = pythonH5py('NWB reader tests (files written by test/helpers/nwb-fixture.py)');
const d = HAS_H5PY ? describe : describe.skip;

let sensorium: string;
let tmp: string;
let nwb: string;
beforeAll(async () => {
  if (!HAS_H5PY) return;
  await loadNwbSupport();
  sensorium = await tinyDataset();
  tmp = mkdtempSync(join(tmpdir(), 'cc-nwb-'));
  nwb = writeNwbFixture(sensorium, join(tmp, 'session.nwb'));
}, 120_000);

const bytes = (a: Float32Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);

/** Every trial of `b` equals the same trial of `a`: tier, image and responses, bit for bit. */
function expectSameTrials(a: SensoriumDataset, b: SensoriumDataset, count = a.trialCount): void {
  expect(b.trialCount).toBe(count);
  expect(b.tiers).toEqual(a.tiers.slice(0, count));
  expect(b.unitIds).toEqual(a.unitIds);
  for (let i = 0; i < count; i++) {
    const x = a.trial(i);
    const y = b.trial(i);
    expect(bytes(y.responses).equals(bytes(x.responses)), `trial ${i} responses`).toBe(true);
    expect(bytes(y.image).equals(bytes(x.image)), `trial ${i} image`).toBe(true);
  }
}

d('NWB reader (files from an independent h5py writer)', () => {
  it('reads traces, clock, ROI ids, presentations and templates', () => {
    const r = readNwbRecording(nwb);
    const ref = SensoriumDataset.open(sensorium);
    expect(r.seriesPath).toBe('/processing/ophys/DfOverF/RoiResponseSeries');
    expect(r.stimulusPath).toBe('/intervals/stimulus_presentations');
    expect(r.units).toBe(300);
    expect(r.frames).toBe(ref.trialCount * 5 + 2);
    expect(r.rate).toBeCloseTo(10, 9);
    expect(r.unitIds).toEqual(ref.unitIds);
    expect(r.presentations).toHaveLength(ref.trialCount);
    expect(r.presentations[1]).toMatchObject({ start: 2.5, template: 1, tier: ref.tiers[1] });
    expect(r.templates).toHaveLength(new Set(ref.imageIds).size);
    expect([r.templates[0].height, r.templates[0].width]).toEqual([144, 256]);
  });

  it('cuts the default window (stimulus duration, one frame of lag) into exactly the SENSORIUM trials', () => {
    const ds = openDataset(nwb);
    expect(ds.responseWindow).toEqual({ lengthFrames: 3, lagFrames: 1, rateHz: expect.closeTo(10, 9) });
    expectSameTrials(SensoriumDataset.open(sensorium), ds);
  });

  it('a different window gives different responses (the window is what is averaged)', () => {
    const a = openDataset(nwb, { lagFrames: 0 }).trial(0).responses;
    const b = SensoriumDataset.open(sensorium).trial(0).responses;
    expect(Array.from(a)).not.toEqual(Array.from(b));
    // With a baseline of one frame, the response is the window minus the frame before the onset;
    // the first presentation has no such frame and is dropped.
    const base = openDataset(nwb, { baselineFrames: 1, lagFrames: 1, lengthFrames: 3 });
    const plain = openDataset(nwb, { lagFrames: 1, lengthFrames: 3 });
    expect(base.trialCount).toBe(plain.trialCount - 1);
    const before = readNwbRecording(nwb).traces.subarray(4 * 300, 5 * 300);
    for (const j of [0, 7, 299]) expect(base.trial(0).responses[j]).toBeCloseTo(plain.trial(1).responses[j] - before[j], 5);
  });

  it('brings templates of another size to the 144x256 geometry by centre crop and area resize', () => {
    // Twice the size with 32-pixel bars left and right: the crop removes the bars, the resize the doubling.
    const big = writeNwbFixture(sensorium, join(tmp, 'big.nwb'), '--template-scale', '2', '--template-pad', '64', '--trials', '40');
    expect(readNwbRecording(big).templates[0]).toMatchObject({ height: 288, width: 640 });
    expectSameTrials(SensoriumDataset.open(sensorium), openDataset(big), 40);
  });

  it('reads an ImageSeries of templates, starting_time + rate, and an IndexSeries alone', () => {
    const ref = SensoriumDataset.open(sensorium);
    expectSameTrials(ref, openDataset(writeNwbFixture(sensorium, join(tmp, 'series.nwb'), '--templates', 'imageseries', '--timing', 'rate', '--trials', '40')), 40);
    // An IndexSeries has onsets only: a presentation lasts until the next onset, so the window is given.
    const ix = writeNwbFixture(sensorium, join(tmp, 'index.nwb'), '--stimulus', 'indexseries', '--trials', '120');
    const r = readNwbRecording(ix);
    expect(r.stimulusPath).toBe('/stimulus/presentation/ImageIndex');
    expect(r.presentations[0].stop - r.presentations[0].start).toBeCloseTo(0.5, 9);
    const ds = openDataset(ix, { lengthFrames: 3, lagFrames: 1 });
    expect(ds.responseWindow).toMatchObject({ lengthFrames: 3, lagFrames: 1 });
    for (const i of [0, 5, 100]) expect(Array.from(ds.trial(i).responses)).toEqual(Array.from(ref.trial(i).responses));
  });

  it('without a tier column: repeated images are the test tier, a seeded tenth of the rest validates', () => {
    const ref = SensoriumDataset.open(sensorium);
    const ds = openDataset(writeNwbFixture(sensorium, join(tmp, 'notier.nwb'), '--no-tier'));
    const testIds = (x: SensoriumDataset): number[] => x.indices('test');
    expect(testIds(ds)).toEqual(testIds(ref));
    const nonTestImages = new Set(ds.indices('train').concat(ds.indices('validation')).map((i) => ds.imageIds[i])).size;
    expect(new Set(ds.indices('validation').map((i) => ds.imageIds[i])).size).toBe(Math.round(nonTestImages * 0.1));
    expect(openDataset(writeNwbFixture(sensorium, join(tmp, 'notier2.nwb'), '--no-tier')).tiers).toEqual(ds.tiers);
  });

  it('ridge on the NWB file matches ridge on the SENSORIUM folder; the bundle records the window', async () => {
    const quiet = { quiet: true, log: () => undefined };
    const fromFolder = await trainRidge({ data: sensorium, out: join(tmp, 'ridge-folder'), ...quiet });
    const fromNwb = await trainRidge({ data: nwb, out: join(tmp, 'ridge-nwb'), ...quiet });
    // Same trials bit for bit, same tiers and order: the fits agree to float rounding.
    for (const k of ['ssim', 'ssiml', 'mse', 'pixcorr'])
      expect(fromNwb.manifest.metrics.validation![k], k).toBeCloseTo(fromFolder.manifest.metrics.validation![k], 6);
    expect(loadBundle(join(tmp, 'ridge-nwb')).manifest.responseWindow).toEqual({ lengthFrames: 3, lagFrames: 1, rateHz: expect.closeTo(10, 9) });
    expect(loadBundle(join(tmp, 'ridge-folder')).manifest.responseWindow).toBeUndefined();

    // `import nwb` writes the same session as a folder, window included.
    const imported = join(tmp, 'imported');
    const r = importNwb(nwb, imported);
    expect(r.trials).toBe(SensoriumDataset.open(sensorium).trialCount);
    expect(JSON.parse(readFileSync(join(imported, 'meta/recording/response_window.json'), 'utf8'))).toMatchObject({ lengthFrames: 3, lagFrames: 1 });
    expectSameTrials(SensoriumDataset.open(sensorium), SensoriumDataset.open(imported));
    const fromImport = await trainRidge({ data: imported, out: join(tmp, 'ridge-imported'), ...quiet });
    expect(fromImport.manifest.metrics.validation!.ssim).toBeCloseTo(fromFolder.manifest.metrics.validation!.ssim, 6);
    expect(fromImport.manifest.responseWindow).toMatchObject({ lengthFrames: 3, lagFrames: 1 });
    expect(existsSync(join(imported, 'meta/recording/source.json'))).toBe(true);
  }, 180_000);

  it('the command line: `import nwb` with the global window options given after the command', async () => {
    const { main } = await import('../../src/cli.js');
    const out = join(tmp, 'cli-imported');
    try {
      await main(['node', 'cortexcast', 'import', 'nwb', nwb, '--out', out, '--window-frames', '2', '--lag-frames', '3']);
    } finally {
      configureNwbReading({});
    }
    expect(JSON.parse(readFileSync(join(out, 'meta/recording/response_window.json'), 'utf8'))).toMatchObject({ lengthFrames: 2, lagFrames: 3 });
    // Frames k+3 and k+4 of the fixture hold r and 3r + 1: the window's mean is 2r + 0.5.
    const r = SensoriumDataset.open(sensorium).trial(7).responses;
    const got = SensoriumDataset.open(out).trial(7).responses;
    for (const j of [0, 50, 299]) expect(got[j]).toBeCloseTo(2 * r[j] + 0.5, 5);
  }, 120_000);
});
