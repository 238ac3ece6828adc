import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { npyNumbers, readNpy } from '../../common/npy.js';
import { scoreImages } from './metrics/image-metrics.js';

/**
 * Where each image came from (for the simulated V1: the source photo), so a score can be broken down
 * per source and a decoder that suits one photo is seen as such. Read from
 * `meta/trials/stimulus_source.npy` (one string per trial), or, for simulated datasets written before
 * that file existed, from `meta/simulation/params.json`. Undefined when the dataset records neither.
 */
export function stimulusSources(dataDir: string): Map<number, string> | undefined {
  const npy = join(dataDir, 'meta/trials/stimulus_source.npy');
  const ids = join(dataDir, 'meta/trials/frame_image_id.npy');
  if (existsSync(npy) && existsSync(ids)) {
    const sources = readNpy(npy).data;
    const imageIds = npyNumbers(readNpy(ids), ids);
    if (!Array.isArray(sources) || sources.length !== imageIds.length) return undefined;
    return new Map(Array.from(imageIds, (id, i) => [id, sources[i]]));
  }
  const params = join(dataDir, 'meta/simulation/params.json');
  if (!existsSync(params)) return undefined;
  const trials = (JSON.parse(readFileSync(params, 'utf8')) as { trials?: { imageId: number; photo: string }[] }).trials;
  return trials ? new Map(trials.map((t) => [t.imageId, t.photo])) : undefined;
}

export interface SourceScores {
  source: string;
  images: number;
  ssiml: number;
  mse: number;
  pixcorr: number;
}

/** Mean scores per stimulus source, sources in name order. */
export function scoresBySource(sources: Map<number, string>, imageIds: readonly number[], targets: Float32Array, recon: Float32Array, h: number, w: number): SourceScores[] {
  const P = h * w;
  const groups = new Map<string, number[]>();
  imageIds.forEach((id, i) => {
    const s = sources.get(id) ?? 'unknown';
    groups.set(s, [...(groups.get(s) ?? []), i]);
  });
  return [...groups.entries()]
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([source, rows]) => {
      const t = new Float32Array(rows.length * P);
      const r = new Float32Array(rows.length * P);
      rows.forEach((row, k) => {
        t.set(targets.subarray(row * P, (row + 1) * P), k * P);
        r.set(recon.subarray(row * P, (row + 1) * P), k * P);
      });
      const s = scoreImages(t, r, rows.length, h, w);
      return { source, images: rows.length, ssiml: s.ssiml, mse: s.mse, pixcorr: s.pixcorr };
    });
}
