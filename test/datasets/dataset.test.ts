import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { beforeAll, describe, expect, it } from 'vitest';
import { SensoriumDataset } from '../../src/datasets/sensorium.js';
import { prepareDataset, DEFAULT_PREPROCESS } from '../../src/datasets/preprocess.js';
import { resizeArea } from '../../src/datasets/image-ops.js';
import { readNpy } from '../../src/common/npy.js';
import { SYNTH_PRESETS } from '../../src/training/data/synth.js';
import { drawNeurons, receptiveFields, DEFAULT_SIMULATOR } from '../../src/training/data/simulator.js';
import { inspectDataset } from '../../src/training/eval/inspect.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

let dir: string;
beforeAll(async () => {
  dir = await tinyDataset();
});

const copy = (): string => {
  const d = join(mkdtempSync(join(tmpdir(), 'cc-copy-')), 'ds');
  cpSync(dir, d, { recursive: true });
  return d;
};

describe('simulated V1 in the SENSORIUM layout', () => {
  it('writes every tier, repeats for test, and the documented meta files', () => {
    const ds = SensoriumDataset.open(dir);
    const t = SYNTH_PRESETS.tiny;
    expect(ds.indices('train')).toHaveLength(t.trainTrials);
    expect(ds.indices('validation')).toHaveLength(t.validationTrials);
    expect(ds.indices('test')).toHaveLength(t.testImages * t.repeats);
    expect(new Set(ds.indices('test').map((i) => ds.imageIds[i])).size).toBe(t.testImages);
    expect(ds.neurons).toBe(300);
    expect(ds.imageShape).toEqual([144, 256]);
    for (const f of ['meta/statistics/responses/all/std.npy', 'meta/statistics/images/all/mean.npy', 'meta/neurons/cell_motor_coordinates.npy', 'meta/simulation/params.json'])
      expect(existsSync(join(dir, f))).toBe(true);
    const tr = ds.trial(0);
    expect(tr.image.length).toBe(144 * 256);
    expect(Math.max(...tr.image)).toBeLessThanOrEqual(255);
    expect(tr.behavior).toHaveLength(3);
  });

  it('splits by source photo: no validation or test crop comes from a train photo', () => {
    const params = JSON.parse(readFileSync(join(dir, 'meta/simulation/params.json'), 'utf8')) as { trials: { tier: string; photo: string }[] };
    const photos = (tier: string): Set<string> => new Set(params.trials.filter((t) => t.tier === tier).map((t) => t.photo));
    for (const p of photos('test')) expect(photos('train').has(p)).toBe(false);
    for (const p of photos('validation')) expect(photos('train').has(p)).toBe(false);
  });

  it('responses are sparse, non-negative, and driven by the stimulus (repeats agree more than different images)', () => {
    const ds = SensoriumDataset.open(dir);
    const test = ds.indices('test');
    const byId = new Map<number, Float32Array[]>();
    for (const i of test) {
      const id = ds.imageIds[i];
      if (!byId.has(id)) byId.set(id, []);
      byId.get(id)!.push(ds.trial(i).responses);
    }
    const groups = [...byId.values()];
    const corr = (a: Float32Array, b: Float32Array): number => {
      const n = a.length;
      const ma = a.reduce((s, v) => s + v, 0) / n;
      const mb = b.reduce((s, v) => s + v, 0) / n;
      let sab = 0;
      let saa = 0;
      let sbb = 0;
      for (let i = 0; i < n; i++) {
        sab += (a[i] - ma) * (b[i] - mb);
        saa += (a[i] - ma) ** 2;
        sbb += (b[i] - mb) ** 2;
      }
      return sab / Math.sqrt(saa * sbb);
    };
    let same = 0;
    let diff = 0;
    for (let g = 0; g < groups.length; g++) {
      same += corr(groups[g][0], groups[g][1]) / groups.length;
      diff += corr(groups[g][0], groups[(g + 1) % groups.length][1]) / groups.length;
    }
    expect(same).toBeGreaterThan(diff + 0.05);
    const r = ds.trial(0).responses;
    expect(r.every((v) => v >= 0)).toBe(true);
    expect(r.filter((v) => v === 0).length / r.length).toBeGreaterThan(0.3);
  });

  it('receptive fields are zero-mean, unit-norm Gabors centred where the parameters say', () => {
    const p = drawNeurons({ ...DEFAULT_SIMULATOR, neurons: 5 });
    const { even } = receptiveFields(p, 36, 64);
    for (let i = 0; i < 5; i++) {
      let sum = 0;
      let sq = 0;
      let best = 0;
      let at = 0;
      for (let k = 0; k < 36 * 64; k++) {
        const v = even[k * 5 + i];
        sum += v;
        sq += v * v;
        if (Math.abs(v) > best) [best, at] = [Math.abs(v), k];
      }
      expect(Math.abs(sum)).toBeLessThan(1e-4);
      expect(sq).toBeCloseTo(1, 4);
      const dist = Math.hypot((at % 64) - p.centerX[i], Math.floor(at / 64) - p.centerY[i]);
      expect(dist).toBeLessThan(2 * p.sigma[i] + 1.5);
    }
  });

  it('inspect writes a stimulus sheet PNG and a statistics SVG', () => {
    const out = mkdtempSync(join(tmpdir(), 'cc-inspect-'));
    const s = inspectDataset(dir, out);
    expect(s.neurons).toBe(300);
    expect(readFileSync(s.files[0]).subarray(1, 4).toString()).toBe('PNG');
    expect(readFileSync(s.files[1], 'utf8')).toMatch(/^<svg/);
    expect(s.scaledResponseMean).toBeGreaterThan(0.1);
    expect(s.scaledResponseMean).toBeLessThan(1);
  });
});

describe('SENSORIUM reader errors name the problem', () => {
  it('missing folder, missing trial file, truncated file, wrong neuron count', () => {
    expect(() => SensoriumDataset.open('/nonexistent/ds')).toThrow(/CC_ERR_DATASET_MISSING: dataset \/nonexistent\/ds: not a folder/);
    const a = copy();
    rmSync(join(a, 'data/responses/5.npy'));
    expect(() => SensoriumDataset.open(a)).toThrow(/trial 5 has no response file data\/responses\/5\.npy/);
    const b = copy();
    const f = join(b, 'data/images/3.npy');
    truncateSync(f, statSync(f).size - 100);
    const ds = SensoriumDataset.open(b);
    expect(() => ds.trial(3)).toThrow(/CC_ERR_NPY_TRUNCATED.*images\/3\.npy is truncated/);
    const c = copy();
    rmSync(join(c, 'meta/trials/tiers.npy'));
    expect(() => SensoriumDataset.open(c)).toThrow(/trial tiers missing \(expected meta\/trials\/tiers\.npy\)/);
  });
});

describe('preprocessing', () => {
  it('area resize of 144x256 by 0.25 is the 4x4 block mean', () => {
    const src = Float32Array.from({ length: 144 * 256 }, (_, i) => (i * 7919) % 251);
    const out = resizeArea(src, 144, 256, 36, 64);
    let m = 0;
    for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) m += src[(4 + y) * 256 + 8 + x] / 16;
    expect(out[1 * 64 + 2]).toBeCloseTo(m, 4);
  });

  it('z-scores images and std-scales responses with train-tier statistics; test repeats averaged', () => {
    const ds = SensoriumDataset.open(dir);
    const d = prepareDataset(ds, DEFAULT_PREPROCESS, { quiet: true });
    const mean = d.train.images.reduce((s, v) => s + v, 0) / d.train.images.length;
    expect(Math.abs(mean)).toBeLessThan(1e-3);
    // Each neuron's scaled train responses have std ~1 (brainreader: r / (std + 1e-8)).
    const n = d.neurons;
    const j = 7;
    let s = 0;
    let sq = 0;
    for (let r = 0; r < d.train.count; r++) {
      s += d.train.responses[r * n + j];
      sq += d.train.responses[r * n + j] ** 2;
    }
    const sd = Math.sqrt(sq / d.train.count - (s / d.train.count) ** 2);
    expect(sd).toBeCloseTo(1, 3);
    expect(d.test.count).toBe(SYNTH_PRESETS.tiny.testImages);
    expect(d.test.trials[0]).toHaveLength(SYNTH_PRESETS.tiny.repeats);
    // Test row 0 is the mean of its repeats, scaled.
    const raw = d.test.trials[0].map((i) => ds.trial(i).responses[j]);
    expect(d.test.responses[j]).toBeCloseTo((raw.reduce((a, b) => a + b, 0) / raw.length) * d.prep.responseScale[j], 4);
    // 64x64 option.
    const d64 = prepareDataset(ds, { ...DEFAULT_PREPROCESS, imageSize: [64, 64] }, { quiet: true, maxTrain: 10 });
    expect(d64.train.images.length).toBe(10 * 64 * 64);
  });

  it('sensorium scaling floors small stds at 1% of the mean std', () => {
    const ds = SensoriumDataset.open(dir);
    const d = prepareDataset(ds, { ...DEFAULT_PREPROCESS, responseScaling: 'sensorium' }, { quiet: true });
    const meanStd = d.prep.responseStd.reduce((a, b) => a + b, 0) / d.neurons;
    for (let j = 0; j < d.neurons; j++) expect(d.prep.responseScale[j]).toBeLessThanOrEqual(1 / (0.01 * meanStd) + 1e-3);
  });

  it('the dataset loads in numpy (standard .npy files)', () => {
    let ok = true;
    try {
      execFileSync('python3', ['-c', 'import numpy']);
    } catch {
      ok = false;
    }
    if (!ok) return;
    const out = execFileSync('python3', ['-c', `import numpy as np; print(np.load('${dir}/data/images/0.npy').shape, np.load('${dir}/meta/trials/tiers.npy')[:1], np.load('${dir}/data/responses/0.npy').dtype)`]).toString();
    expect(out.trim()).toMatch(/\(1, 144, 256\) \['\w+'\] float32/);
    expect(readNpy(join(dir, 'meta/neurons/unit_ids.npy')).shape).toEqual([300]);
  });
});
