import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeDirAtomic } from '../common/atomic-dir.js';
import { ccError } from '../common/errors.js';
import { writeNpy } from '../common/npy.js';
import { openNwbDataset, type NwbDatasetOptions } from './nwb-dataset.js';
import { RESPONSE_WINDOW_FILE } from './sensorium.js';

export interface NwbImportResult {
  dir: string;
  trials: number;
  neurons: number;
  tiers: Record<string, number>;
  window: { lengthFrames: number; lagFrames: number; rateHz: number };
  source: ReturnType<typeof openNwbDataset>['source'];
}

/**
 * An NWB file as a SENSORIUM 2022 folder: one image (1 x 144 x 256, float32) and one response vector
 * per trial, tiers, image ids, unit ids; the response window and what was read go to meta/recording.
 * The folder is written atomically (a reader sees no half-written session).
 */
export function importNwb(file: string, out: string, o: NwbDatasetOptions & { force?: boolean } = {}): NwbImportResult {
  if (existsSync(out) && readdirSync(out).length && !o.force) throw ccError('CC_ERR_DATASET_MISSING', out, 'output folder exists and is not empty (use --force to overwrite)');
  const { force: _force, ...read } = o;
  const ds = openNwbDataset(file, read);
  const [h, w] = ds.imageShape;
  mkdirSync(join(out, '..'), { recursive: true });
  writeDirAtomic(out, (dir) => {
    for (const sub of ['data/images', 'data/responses', 'meta/trials', 'meta/neurons', 'meta/recording']) mkdirSync(join(dir, sub), { recursive: true });
    for (let i = 0; i < ds.trialCount; i++) {
      const t = ds.trial(i);
      writeNpy(join(dir, 'data/images', `${i}.npy`), t.image, [1, h, w]);
      writeNpy(join(dir, 'data/responses', `${i}.npy`), t.responses, [ds.neurons]);
    }
    writeNpy(join(dir, 'meta/trials/tiers.npy'), ds.tiers);
    writeNpy(join(dir, 'meta/trials/frame_image_id.npy'), BigInt64Array.from(ds.imageIds.map((x) => BigInt(x))));
    writeNpy(join(dir, 'meta/trials/trial_idx.npy'), BigInt64Array.from(ds.tiers.map((_, i) => BigInt(i))));
    writeNpy(join(dir, 'meta/neurons/unit_ids.npy'), BigInt64Array.from(ds.unitIds.map((x) => BigInt(Math.round(x)))));
    writeFileSync(join(dir, RESPONSE_WINDOW_FILE), JSON.stringify(ds.responseWindow, null, 2) + '\n');
    writeFileSync(join(dir, 'meta/recording/source.json'), JSON.stringify({ nwb: file, ...ds.source }, null, 2) + '\n');
  });
  const tiers: Record<string, number> = {};
  for (const t of ds.tiers) tiers[t] = (tiers[t] ?? 0) + 1;
  return { dir: out, trials: ds.trialCount, neurons: ds.neurons, tiers, window: ds.responseWindow, source: ds.source };
}
