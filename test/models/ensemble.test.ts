import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadBundle } from '../../src/models/bundle.js';
import { DecoderRunner } from '../../src/models/decoder-runner.js';
import { createSession } from '../../src/models/ort.js';
import { ensembleBundle } from '../../src/training/eval/ensemble-bundle.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

const quiet = (): void => undefined;

async function decode(dir: string, x: Float32Array, rows: number): Promise<Float32Array> {
  const b = loadBundle(dir);
  const { session } = await createSession(b.model);
  return new DecoderRunner(session, b.manifest).run(x, rows);
}

describe('ensemble bundles: several decoders averaged in one graph', () => {
  let work: string;
  let data: string;
  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'cc-ens-'));
    data = await tinyDataset();
    // Two members that differ: ridge at two fixed regularisations, same data, same scaling.
    await trainRidge({ data, out: join(work, 'a'), alphas: [0.1], quiet: true, log: quiet });
    await trainRidge({ data, out: join(work, 'b'), alphas: [10], quiet: true, log: quiet });
  });

  it("decodes the mean of its members' images", async () => {
    const m = await ensembleBundle({ members: [join(work, 'a'), join(work, 'b')], out: join(work, 'ens'), data, log: quiet });
    expect(m.metrics.validation?.ssiml).toBeGreaterThan(0);
    const n = m.input.neurons;
    const rows = 3;
    const x = Float32Array.from({ length: rows * n }, (_, i) => Math.abs(Math.sin(i * 0.37)) * 2);
    const [a, b, e] = [await decode(join(work, 'a'), x, rows), await decode(join(work, 'b'), x, rows), await decode(join(work, 'ens'), x, rows)];
    expect(e.length).toBe(a.length);
    let maxDiff = 0;
    let memberDiff = 0;
    for (let i = 0; i < e.length; i++) {
      maxDiff = Math.max(maxDiff, Math.abs(e[i] - (a[i] + b[i]) / 2));
      memberDiff = Math.max(memberDiff, Math.abs(a[i] - b[i]));
    }
    expect(memberDiff).toBeGreaterThan(1e-2);
    expect(maxDiff).toBeLessThan(1e-4);
  });

  it('refuses members trained on other neurons, naming the member', async () => {
    const other = await tinyDataset({}, 200);
    await trainRidge({ data: other, out: join(work, 'other'), alphas: [1], quiet: true, log: quiet });
    await expect(ensembleBundle({ members: [join(work, 'a'), join(work, 'other')], out: join(work, 'bad'), log: quiet })).rejects.toThrow(/CC_ERR_BUNDLE.*other.*unit ids differ/);
  });

  it('refuses a single member', async () => {
    await expect(ensembleBundle({ members: [join(work, 'a')], out: join(work, 'one'), log: quiet })).rejects.toThrow(/CC_ERR_OPTION/);
  });
});
