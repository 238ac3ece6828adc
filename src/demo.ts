import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { loadBundle } from './models/bundle.js';
import { synthesize, SYNTH_PRESETS } from './training/data/synth.js';
import { evaluateBundle } from './training/evaluate.js';
import { reconstructionGrid, writeFile } from './training/report/figures.js';
import { trainRidge } from './training/train-ridge.js';

/**
 * `npm start`: make (once, then cached) the small simulated dataset and a ridge decoder, then
 * evaluate it and write the reconstruction grid. The streaming demo replaces this when the server lands.
 */
export async function runDemo(o: { cacheDir: string }): Promise<void> {
  const dir = resolve(o.cacheDir);
  const data = join(dir, 'synth-small');
  const bundle = join(dir, 'ridge');
  if (!existsSync(join(data, 'meta/trials/tiers.npy'))) {
    console.log(`demo: simulating V1 responses to natural images -> ${data}`);
    await synthesize(data, SYNTH_PRESETS.small, { force: true });
  }
  if (!existsSync(join(bundle, 'manifest.json'))) {
    console.log(`demo: fitting the ridge decoder -> ${bundle}`);
    await trainRidge({ data, out: bundle });
  }
  const r = await evaluateBundle(bundle, data, { fid: 64 });
  const grid = join(dir, 'demo-reconstructions.png');
  writeFile(grid, reconstructionGrid([{ label: 'stimulus', images: r.targets }, { label: 'ridge', images: r.recon }], r.count, r.h, r.w));
  const m = r.metrics;
  console.log(`\n${loadBundle(bundle).manifest.name} on the test tier (${m.images} images, repeats averaged)`);
  console.log(`  SSIML ${m.ssiml.toFixed(3)}  MSE ${m.mse.toFixed(3)}  FID-64 ${m.fid?.toFixed(3)}  SSIM ${m.ssim.toFixed(3)}  PixCorr ${m.pixcorr.toFixed(3)}`);
  console.log(`  reconstructions: ${grid} (top row stimulus, bottom row decoded)`);
}
