import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { CortexcastError, type ErrorCode } from '../../src/common/errors.js';
import { loadNwbSupport, openDataset } from '../../src/datasets/dataset-source.js';
import { readNwbRecording, type NwbReadOptions } from '../../src/datasets/nwb-read.js';
import { pythonH5py, writeNwbFixture } from '../helpers/nwb.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

const HAS_H5PY = pythonH5py('NWB error tests (malformed files written by test/helpers/nwb-fixture.py)');
const d = HAS_H5PY ? describe : describe.skip;

let sensorium: string;
let tmp: string;
beforeAll(async () => {
  if (!HAS_H5PY) return;
  await loadNwbSupport();
  sensorium = await tinyDataset({ trainTrials: 30, validationTrials: 6, testImages: 2, repeats: 2 }, 20);
  tmp = mkdtempSync(join(tmpdir(), 'cc-nwb-bad-'));
}, 120_000);

const broken = (name: string): string => writeNwbFixture(sensorium, join(tmp, `${name}.nwb`), '--break', name);

function expectError(f: () => unknown, code: ErrorCode, ...parts: (string | RegExp)[]): void {
  let err: unknown;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err, `expected ${code}`).toBeInstanceOf(CortexcastError);
  const e = err as CortexcastError;
  expect(e.code, e.message).toBe(code);
  for (const p of parts) expect(e.message).toMatch(p);
}

const read = (file: string, o?: NwbReadOptions) => () => readNwbRecording(file, o);

d('NWB reader: coded errors naming the path inside the file and what was expected', () => {
  it('a file that is missing, not HDF5, or not NWB', () => {
    expectError(read(join(tmp, 'absent.nwb')), 'CC_ERR_NWB_FORMAT', /no such file/);
    const junk = join(tmp, 'junk.nwb');
    writeFileSync(junk, 'not an HDF5 file at all');
    expectError(read(junk), 'CC_ERR_NWB_FORMAT', /not a readable HDF5 file/);
    expectError(read(broken('not-nwb')), 'CC_ERR_NWB_FORMAT', /neurodata_type is '', expected 'NWBFile'/);
  });

  it('no RoiResponseSeries, two of them, or a --nwb-series path that is not one', () => {
    expectError(read(broken('no-series')), 'CC_ERR_NWB_MISSING', /a RoiResponseSeries is missing/, /DfOverF or Fluorescence/);
    const two = broken('two-series');
    expectError(read(two), 'CC_ERR_NWB_AMBIGUOUS', '/processing/ophys/DfOverF/RoiResponseSeries', '/processing/ophys/Fluorescence/RoiResponseSeries', '--nwb-series');
    expect(readNwbRecording(two, { series: '/processing/ophys/Fluorescence/RoiResponseSeries' }).seriesPath).toBe('/processing/ophys/Fluorescence/RoiResponseSeries');
    expectError(read(two, { series: '/processing/ophys/Nope' }), 'CC_ERR_NWB_MISSING', '/processing/ophys/Nope');
    expectError(read(two, { series: '/processing/ophys/DfOverF' }), 'CC_ERR_NWB_FORMAT', /is a 'DfOverF', expected a RoiResponseSeries/);
  });

  it('no timestamps and no starting_time with a rate; timestamps of the wrong length', () => {
    expectError(read(broken('no-timing')), 'CC_ERR_NWB_TIMING', '/processing/ophys/DfOverF/RoiResponseSeries', /starting_time with a positive rate/);
    expectError(read(broken('timestamps-length')), 'CC_ERR_NWB_SHAPE', /RoiResponseSeries\/timestamps has \d+ values/);
  });

  it('no ROI table region, or a region row outside the ROI table', () => {
    expectError(read(broken('no-rois')), 'CC_ERR_NWB_MISSING', '/processing/ophys/DfOverF/RoiResponseSeries/rois', /PlaneSegmentation/);
    expectError(read(broken('roi-out-of-range')), 'CC_ERR_NWB_INDEX', /rois\[0\] is 25/, /PlaneSegmentation has 20 rows/);
  });

  it('no stimulus presentations, no templates, two template containers', () => {
    expectError(read(broken('no-stimulus')), 'CC_ERR_NWB_MISSING', /stimulus presentations is missing/, /IndexSeries in \/stimulus\/presentation/);
    expectError(read(broken('no-templates')), 'CC_ERR_NWB_MISSING', /\/stimulus\/templates is missing/, /Images container/);
    const two = broken('two-templates');
    expectError(read(two), 'CC_ERR_NWB_AMBIGUOUS', '/stimulus/templates/StimulusImages', '/stimulus/templates/Other', '--nwb-templates');
    expect(readNwbRecording(two, { templates: '/stimulus/templates/StimulusImages' }).templatesPath).toBe('/stimulus/templates/StimulusImages');
  });

  it('an image index outside the templates', () => {
    expectError(read(broken('index-out-of-range')), 'CC_ERR_NWB_INDEX', /\/intervals\/stimulus_presentations\/image_index\[3\] is \d+, the templates at \S+ hold \d+ images/);
    expectError(read(join(tmp, 'index-out-of-range.nwb'), { stimulus: '/stimulus/presentation/ImageIndex' }), 'CC_ERR_NWB_INDEX', /ImageIndex\/data\[3\]/);
  });

  it('window options that cannot be a window', () => {
    const ok = writeNwbFixture(sensorium, join(tmp, 'ok.nwb'));
    expectError(() => openDataset(ok, { lengthFrames: 0 }), 'CC_ERR_OPTION', /--window-frames/);
    expectError(() => openDataset(ok, { lagFrames: -1 }), 'CC_ERR_OPTION', /--lag-frames/);
    expectError(() => openDataset(ok, { lengthFrames: 10_000 }), 'CC_ERR_NWB_SHAPE', /no presentation .* has its response window/);
  });
});
