import { ccError } from '../../common/errors.js';
import { progress } from '../../common/progress.js';
import { resampleMatrix } from '../../models/layers.js';
import { Rng } from '../../models/rng.js';
import { resizeArea } from '../../datasets/image-ops.js';
import type { PreparedData } from '../../datasets/preprocess.js';
import type { SensoriumDataset } from '../../datasets/sensorium.js';
import { IMAGE_H, IMAGE_W, planCrop } from '../data/synth.js';
import { cropPhoto, loadPhoto, PHOTOS, type PhotoName } from '../data/photos.js';

/** A dataset the autoencoder learns the images of: its prepared tiers and where its stimuli came from. */
export interface ImageSource {
  ds: SensoriumDataset;
  data: PreparedData;
}

/** Images for the autoencoder, grey levels in [0, 1] at its working size. */
export interface AutoencoderImageSet {
  count: number;
  height: number;
  width: number;
  pixels: Float32Array;
  /** Where they came from, for the autoencoder's manifest. */
  provenance: { datasetStimuli: number; photoCrops: number; photos: PhotoName[]; excludedPhotos: PhotoName[] };
}

/** Resample one image [h, w] to [oh, ow] (separable: linear up, area down; as the chained graph's resizeImage). */
export function resampleHost(src: ArrayLike<number>, h: number, w: number, oh: number, ow: number, out = new Float32Array(oh * ow)): Float32Array {
  const cols = resampleMatrix(w, ow);
  const rows = resampleMatrix(h, oh);
  const mid = new Float32Array(h * ow);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const v = src[y * w + x];
      if (v) for (let o = 0; o < ow; o++) mid[y * ow + o] += v * cols[x * ow + o];
    }
  out.fill(0);
  for (let y = 0; y < h; y++)
    for (let o = 0; o < oh; o++) {
      const k = rows[y * oh + o];
      if (k) for (let x = 0; x < ow; x++) out[o * ow + x] += k * mid[y * ow + x];
    }
  return out;
}

/** A prepared tier's z-scored images back to grey levels in [0, 1], resampled to [oh, ow]. */
export function tierToGrey(data: PreparedData, images: Float32Array, count: number, oh: number, ow: number): Float32Array {
  const { height: H, width: W } = data;
  const P = H * W;
  const out = new Float32Array(count * oh * ow);
  const grey = new Float32Array(P);
  for (let i = 0; i < count; i++) {
    for (let k = 0; k < P; k++) grey[k] = (images[i * P + k] * data.prep.imageStd + data.prep.imageMean) / 255;
    resampleHost(grey, H, W, oh, ow, out.subarray(i * oh * ow, (i + 1) * oh * ow));
  }
  return out;
}

/** Photos a simulated dataset's validation and test crops come from (meta/simulation); none for other datasets. */
export function heldOutPhotos(ds: SensoriumDataset): PhotoName[] {
  const sim = ds.simulation() as { photoSplit?: { validation?: string[]; test?: string[] } } | undefined;
  const split = sim?.photoSplit;
  return [...(split?.validation ?? []), ...(split?.test ?? [])].filter((p): p is PhotoName => (PHOTOS as readonly string[]).includes(p));
}

/**
 * The autoencoder's training images: every source dataset's train-tier stimuli plus `photoCrops`
 * random crops (scale, position, mirror) of the npm photos that no source dataset's validation or test
 * tier comes from - so the held-out reconstruction score is on photos the autoencoder never saw.
 * Crops go through the datasets' own pipeline (144 x 256 crop, area-resized to the decoder size).
 */
export async function autoencoderImages(sources: ImageSource[], o: { height: number; width: number; photoCrops: number; seed: number; quiet?: boolean }): Promise<AutoencoderImageSet> {
  const { height: oh, width: ow } = o;
  const S = oh * ow;
  const excluded = [...new Set(sources.flatMap((s) => heldOutPhotos(s.ds)))];
  const photos = PHOTOS.filter((p) => !excluded.includes(p));
  if (o.photoCrops > 0 && !photos.length) throw ccError('CC_ERR_OPTION', 'every npm photo feeds a validation or test tier of the given datasets: use --photo-crops 0');
  const stimuli = sources.reduce((n, s) => n + s.data.train.count, 0);
  const count = stimuli + o.photoCrops;
  const pixels = new Float32Array(count * S);
  let row = 0;
  for (const s of sources) {
    pixels.set(tierToGrey(s.data, s.data.train.images, s.data.train.count, oh, ow), row * S);
    row += s.data.train.count;
  }
  if (o.photoCrops > 0) {
    const { height: H, width: W } = sources[0].data;
    const loaded = await Promise.all(photos.map((p) => loadPhoto(p)));
    const rng = new Rng(o.seed * 977 + 13);
    const bar = progress('photo crops', o.photoCrops, { quiet: o.quiet });
    const small = new Float32Array(H * W);
    for (let b0 = 0; b0 < o.photoCrops; b0 += 64) {
      const n = Math.min(64, o.photoCrops - b0);
      const picks = Array.from({ length: n }, () => loaded[rng.int(loaded.length)]);
      const crops = await Promise.all(picks.map((p) => cropPhoto(p, planCrop(rng, p, [0.15, 0.9]), IMAGE_W, IMAGE_H)));
      for (const c of crops) {
        resizeArea(c, IMAGE_H, IMAGE_W, H, W, small);
        for (let k = 0; k < small.length; k++) small[k] /= 255;
        resampleHost(small, H, W, oh, ow, pixels.subarray(row * S, (row + 1) * S));
        row++;
      }
      bar.tick(n);
    }
    bar.stop();
  }
  return { count, height: oh, width: ow, pixels, provenance: { datasetStimuli: stimuli, photoCrops: o.photoCrops, photos, excludedPhotos: excluded } };
}
