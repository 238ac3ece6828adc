import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ccError } from '../../common/errors.js';
import { VERSION } from '../../common/version.js';
import { readModel, writeModel, type Graph, type TensorData } from '../../models/onnx/index.js';

/**
 * An autoencoder folder (cortexcast train autoencoder): what a latent decoder is chained with.
 * `encoder.onnx` maps grey images [B, 1, H, W] in [0, 1] to the latent (the VAE's posterior mean, or
 * an image network's feature map); `decoder.onnx` maps the latent back to grey images in [0, 1].
 * Readins are trained on `latentScale * latent` (unit variance, as the SD-VAE's 0.18215).
 */
export const AUTOENCODER_FORMAT = 'cortexcast-autoencoder';
export const AE_IO = { image: 'image', latent: 'latent', reconstruction: 'reconstruction' } as const;

const scores = z.record(z.string(), z.number());

export const autoencoderSchema = z
  .object({
    format: z.literal(AUTOENCODER_FORMAT),
    formatVersion: z.literal(1),
    space: z.enum(['vae', 'features']),
    profile: z.enum(['small', 'paper', 'realtime']),
    image: z.object({ height: z.number().int().positive(), width: z.number().int().positive() }),
    latent: z.tuple([z.number().int().positive(), z.number().int().positive(), z.number().int().positive()]),
    latentScale: z.number().positive(),
    /** The builder settings the decoder was made with (VaeConfig, or FeatureDecoderConfig + network layer). */
    architecture: z.record(z.string(), z.unknown()),
    images: z.object({ datasetStimuli: z.number().int(), photoCrops: z.number().int(), photos: z.array(z.string()), excludedPhotos: z.array(z.string()), datasets: z.array(z.string()) }),
    /** Reconstruction of held-out images (a dataset's validation tier, photos never trained on) at the dataset's size, and the mean-image baseline. */
    heldOut: z.object({ dataset: z.string(), count: z.number().int(), reconstruction: scores, meanImage: scores }),
    training: z.object({ step: z.number().int(), seconds: z.number(), config: z.record(z.string(), z.unknown()) }),
    /** sha256 of encoder.onnx and decoder.onnx: the three files were written together. */
    files: z.object({ encoder: z.string().regex(/^[0-9a-f]{64}$/), decoder: z.string().regex(/^[0-9a-f]{64}$/) }),
    cortexcast: z.string(),
    createdAt: z.string(),
  })
  .strict();

export type AutoencoderManifest = z.infer<typeof autoencoderSchema>;

export interface LoadedAutoencoder {
  dir: string;
  manifest: AutoencoderManifest;
  encoder: Uint8Array;
  decoder: Uint8Array;
  /** The decoder's initializers by name (weights and batch-norm statistics under `decoder/`). */
  decoderTensors: Map<string, TensorData>;
}

/**
 * Write (or replace) the folder: every file goes to a temporary name first and is renamed into place,
 * the manifest last and with the sha256 of both graphs, so a run killed mid-export leaves either the
 * previous autoencoder or the new one, and a mixed folder is refused on read.
 */
export function writeAutoencoder(dir: string, m: Omit<AutoencoderManifest, 'format' | 'formatVersion' | 'cortexcast' | 'createdAt' | 'files'>, encoder: Graph | Uint8Array, decoder: Graph): AutoencoderManifest {
  mkdirSync(dir, { recursive: true });
  const encoderBytes = encoder instanceof Uint8Array ? encoder : writeModel(encoder, { docString: `cortexcast ${m.space} autoencoder encoder: grey image -> latent` });
  const decoderBytes = writeModel(decoder, { docString: `cortexcast ${m.space} autoencoder decoder: latent -> grey image` });
  const manifest: AutoencoderManifest = {
    format: AUTOENCODER_FORMAT,
    formatVersion: 1,
    ...m,
    files: { encoder: sha256(encoderBytes), decoder: sha256(decoderBytes) },
    cortexcast: VERSION,
    createdAt: new Date().toISOString(),
  };
  const put = (name: string, bytes: Uint8Array | string): void => {
    const tmp = join(dir, `.${name}.${process.pid}.tmp`);
    writeFileSync(tmp, bytes);
    renameSync(tmp, join(dir, name));
  };
  put('encoder.onnx', encoderBytes);
  put('decoder.onnx', decoderBytes);
  put('autoencoder.json', JSON.stringify(manifest, null, 2) + '\n');
  return manifest;
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

export function readAutoencoder(dir: string): LoadedAutoencoder {
  const file = join(dir, 'autoencoder.json');
  if (!existsSync(file)) throw ccError('CC_ERR_AUTOENCODER', dir, 'no autoencoder.json (make one with `cortexcast train autoencoder`)');
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw ccError('CC_ERR_AUTOENCODER', dir, `autoencoder.json is not JSON: ${(e as Error).message}`);
  }
  const parsed = autoencoderSchema.safeParse(raw);
  if (!parsed.success) throw ccError('CC_ERR_AUTOENCODER', dir, `autoencoder.json: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const read = (name: string): Uint8Array => {
    const f = join(dir, name);
    if (!existsSync(f)) throw ccError('CC_ERR_AUTOENCODER', dir, `${name} is missing`);
    return new Uint8Array(readFileSync(f));
  };
  const encoder = read('encoder.onnx');
  const decoder = read('decoder.onnx');
  for (const [name, bytes] of [['encoder', encoder], ['decoder', decoder]] as const)
    if (sha256(bytes) !== parsed.data.files[name]) throw ccError('CC_ERR_AUTOENCODER', dir, `${name}.onnx does not match the sha256 in autoencoder.json (a partial write, or edited by hand)`);
  const decoderTensors = new Map<string, TensorData>();
  for (const [name, init] of readModel(decoder).graph.initializers) if (name.startsWith('decoder/')) decoderTensors.set(name, init.tensor);
  return { dir, manifest: parsed.data, encoder, decoder, decoderTensors };
}

/**
 * Give the builder-made initializers of `g` under `prefix` their trained values (the same builder made
 * both, so names and shapes match; constants the builder makes identically need not be stored).
 * Every tensor under `prefix` must land; returns how many did.
 */
export function loadTensorsInto(g: Graph, tensors: Map<string, TensorData>, prefix: string, where: string): number {
  let n = 0;
  for (const [name, t] of tensors) {
    if (!name.startsWith(prefix)) continue;
    const init = g.initializers.get(name);
    if (!init) throw ccError('CC_ERR_AUTOENCODER', where, `the architecture has no tensor ${name} (made by a different architecture?)`);
    if (t.dims.join('x') !== init.tensor.dims.join('x')) throw ccError('CC_ERR_AUTOENCODER', where, `tensor ${name} is ${t.dims.join('x')}, the architecture needs ${init.tensor.dims.join('x')}`);
    g.setInitializer(name, t);
    n++;
  }
  if (!n) throw ccError('CC_ERR_AUTOENCODER', where, `no trained tensors under ${prefix}`);
  return n;
}
