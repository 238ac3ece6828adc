import { createSession } from '../../../models/ort.js';
import { embedImages } from './fid.js';
import { inceptionModel } from './inception.js';

/**
 * Two-way identification, as image-reconstruction studies report it (e.g. MindEye's "Incep" column):
 * for each reconstruction, the fraction of the other test images whose features correlate less with
 * it than its own stimulus's features do; averaged over reconstructions. Chance is 0.5, perfect 1.
 *
 * Features: the InceptionV3 that FID uses (converted from the nsfwjs weights), at two depths, as
 * studies report low- and high-level identification: 'low' (the second pooling stage on a 5 x 5
 * grid, 4,800 values) asks whether edges and textures are where the stimulus has them; 'high' (the
 * last pooled layer, 2,048 values) whether it looks like the same kind of scene.
 */
export function twoWayIdentification(reconFeatures: Float64Array, targetFeatures: Float64Array, count: number, dim: number): number {
  if (count < 2) return Number.NaN;
  const centred = (src: Float64Array, i: number): Float64Array => {
    const v = src.slice(i * dim, (i + 1) * dim);
    let mean = 0;
    for (const x of v) mean += x;
    mean /= dim;
    let norm = 0;
    for (let k = 0; k < dim; k++) {
      v[k] -= mean;
      norm += v[k] * v[k];
    }
    const s = 1 / Math.sqrt(norm + 1e-30);
    for (let k = 0; k < dim; k++) v[k] *= s;
    return v;
  };
  const recon = Array.from({ length: count }, (_, i) => centred(reconFeatures, i));
  const target = Array.from({ length: count }, (_, i) => centred(targetFeatures, i));
  const corr = (a: Float64Array, b: Float64Array): number => {
    let s = 0;
    for (let k = 0; k < dim; k++) s += a[k] * b[k];
    return s;
  };
  let total = 0;
  for (let i = 0; i < count; i++) {
    const own = corr(recon[i], target[i]);
    let wins = 0;
    for (let j = 0; j < count; j++) if (j !== i) wins += corr(recon[i], target[j]) < own ? 1 : 0;
    total += wins / (count - 1);
  }
  return total / count;
}

/** Values per image of each identification feature set (see InceptionFeatures). */
const FEATURE_DIM = { low: 192 * 5 * 5, high: 2048 } as const;

export interface Identification {
  /** In InceptionV3's second pooling stage on a 5 x 5 grid: edges and textures where they are. */
  low: number;
  /** In InceptionV3's last pooled layer: what kind of scene it is. */
  high: number;
}

/** Two-way identification of [count, h*w] reconstructions against their stimuli (any pixel range). */
export async function identificationAccuracy(targets: Float32Array, recon: Float32Array, count: number, h: number, w: number): Promise<Identification> {
  const score = async (features: 'low' | 2048, dim: number): Promise<number> => {
    const { session } = await createSession(inceptionModel(features));
    const t = await embedImages(session, dim, targets, count, h, w);
    const r = await embedImages(session, dim, recon, count, h, w);
    return twoWayIdentification(r, t, count, dim);
  };
  return { low: await score('low', FEATURE_DIM.low), high: await score(2048, FEATURE_DIM.high) };
}
