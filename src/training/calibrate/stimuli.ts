import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join } from 'node:path';
import { PNG } from 'pngjs';
import { ccError } from '../../common/errors.js';
import { readNpy, npyNumbers } from '../../common/npy.js';
import { resizeArea } from '../../datasets/image-ops.js';
import { SensoriumDataset } from '../../datasets/sensorium.js';
import { openDataset } from '../../datasets/dataset-source.js';

/** A grey image 0..255 at any size. */
export interface GreyImage {
  pixels: ArrayLike<number>;
  height: number;
  width: number;
}

/**
 * The images a calibration may be shown, by image id, resized (area) to the decoder's size once and
 * cached: a dataset folder in the SENSORIUM layout (the first trial of each id), an NWB file's
 * stimulus templates, or a folder of `<id>.png` / `<id>.npy` files.
 */
export class StimulusSet {
  private readonly cache = new Map<number, Float32Array>();

  private constructor(
    readonly source: string,
    private readonly read: (imageId: number) => GreyImage | undefined,
    readonly height: number,
    readonly width: number,
  ) {}

  static async open(path: string, height: number, width: number): Promise<StimulusSet> {
    if (!existsSync(path)) throw ccError('CC_ERR_CALIBRATION', `stimuli ${path} do not exist`);
    if (statSync(path).isFile()) {
      if (extname(path).toLowerCase() !== '.nwb') throw ccError('CC_ERR_CALIBRATION', `stimuli ${path}: a file must be an NWB recording (.nwb); give a folder otherwise`);
      // HDF5 (WebAssembly) is loaded only when a stimulus set is an NWB file.
      const { readNwbRecording } = await import('../../datasets/nwb-read.js');
      const rec = readNwbRecording(path);
      const byId = new Map(rec.templates.map((t) => [t.imageId, { pixels: t.image, height: t.height, width: t.width }]));
      return new StimulusSet(path, (id) => byId.get(id), height, width);
    }
    if (existsSync(join(path, 'meta', 'trials'))) {
      const ds = openDataset(path);
      const first = new Map<number, number>();
      ds.imageIds.forEach((id, i) => first.has(id) || first.set(id, i));
      const [h, w] = ds.imageShape;
      return new StimulusSet(path, (id) => (first.has(id) ? { pixels: ds.trial(first.get(id)!).image, height: h, width: w } : undefined), height, width);
    }
    const files = new Map<number, string>();
    for (const name of readdirSync(path)) {
      const m = /^(\d+)\.(png|npy)$/i.exec(name);
      if (m) files.set(Number(m[1]), join(path, name));
    }
    if (!files.size) throw ccError('CC_ERR_CALIBRATION', `stimuli ${path}: no <id>.png or <id>.npy files, and not a dataset folder (meta/trials)`);
    return new StimulusSet(path, (id) => (files.has(id) ? readImageFile(files.get(id)!) : undefined), height, width);
  }

  /** Grey levels resized to the decoder's size, or undefined when the set has no such image. */
  get(imageId: number): Float32Array | undefined {
    let img = this.cache.get(imageId);
    if (img) return img;
    const g = this.read(imageId);
    if (!g) return undefined;
    img = resizeGrey(g, this.height, this.width);
    this.cache.set(imageId, img);
    return img;
  }
}

export const resizeGrey = (g: GreyImage, height: number, width: number): Float32Array =>
  g.height === height && g.width === width ? Float32Array.from(g.pixels) : resizeArea(g.pixels, g.height, g.width, height, width);

function readImageFile(file: string): GreyImage {
  if (file.toLowerCase().endsWith('.npy')) {
    const a = readNpy(file);
    const dims = a.shape.filter((d) => d > 1);
    if (dims.length !== 2) throw ccError('CC_ERR_CALIBRATION', `stimulus ${file} has shape (${a.shape}); expected a 2-D grey image`);
    return { pixels: Float32Array.from(npyNumbers(a)), height: dims[0], width: dims[1] };
  }
  const png = PNG.sync.read(readFileSync(file));
  const grey = new Float32Array(png.width * png.height);
  for (let i = 0; i < grey.length; i++) grey[i] = 0.299 * png.data[4 * i] + 0.587 * png.data[4 * i + 1] + 0.114 * png.data[4 * i + 2];
  return { pixels: grey, height: png.height, width: png.width };
}
