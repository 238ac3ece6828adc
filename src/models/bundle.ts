import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { isPlainName, settledDir, writeDirAtomic } from '../common/atomic-dir.js';
import { z } from 'zod';
import { ccError } from '../common/errors.js';
import { npyNumbers, readNpy, writeNpy } from '../common/npy.js';

/**
 * A decoder bundle: a folder with `model.onnx` and `manifest.json` (+ `std_scale.npy`). Training writes
 * it, the server and `eval` read it; they meet only here. See README "Bundle format".
 */
export const BUNDLE_FORMAT = 'cortexcast-bundle';
export const BUNDLE_VERSION = 1;

export const DECODER_KINDS = ['ridge', 'cnn', 'gan', 'invenc', 'latent', 'encoder'] as const;
export type DecoderKind = (typeof DECODER_KINDS)[number];

import type { ResponseScaling, ResponseTransform } from '../common/scaling.js';
// The response scaling is shared by datasets, training, the server and bundles: it lives in common.
export { applyResponseTransform, responseScaleVector, type ResponseScaling, type ResponseTransform } from '../common/scaling.js';

const metricsSchema = z.record(z.string(), z.number());

export const manifestSchema = z
  .object({
    format: z.literal(BUNDLE_FORMAT),
    formatVersion: z.number().int().min(1).max(BUNDLE_VERSION),
    name: z.string().min(1),
    kind: z.enum(DECODER_KINDS),
    createdAt: z.string(),
    input: z.object({
      neurons: z.number().int().positive(),
      unitIdsFile: z.string(),
      stdScaleFile: z.string(),
      responseScaling: z.enum(['brainreader', 'sensorium']),
      /** Applied after std scaling; 'log10clamp' = log10(max(r, 1e-3)) (the report's "T" ablation). */
      transform: z.enum(['none', 'log10clamp']),
    }),
    output: z.object({
      height: z.number().int().positive(),
      width: z.number().int().positive(),
      /** The model outputs z-scored pixels; grey level = value * pixelStd + pixelMean. */
      pixelMean: z.number(),
      pixelStd: z.number().positive(),
    }),
    onnx: z.object({
      file: z.string(),
      inputName: z.string(),
      outputName: z.string(),
      opset: z.number().int(),
      sha256: z.string().regex(/^[0-9a-f]{64}$/),
    }),
    /** Iterative decoders (kind invenc): the graph is one optimisation step, repeated `steps` times. */
    iterative: z
      .object({
        imageInput: z.string(),
        lrInput: z.string(),
        kernelInput: z.string(),
        steps: z.number().int().positive(),
        lr: z.number().positive(),
        blurSigma: z.number().positive(),
        blurRadius: z.number().int().positive(),
        seed: z.number().int(),
      })
      .optional(),
    training: z.object({
      dataset: z.string(),
      config: z.record(z.string(), z.unknown()),
      seconds: z.number().optional(),
    }),
    /**
     * Set when the training trials were cut from continuous traces (an NWB recording): each response
     * is the mean of `lengthFrames` imaging frames starting `lagFrames` after the onset frame, at `rateHz`.
     */
    responseWindow: z.object({ lengthFrames: z.number().int().positive(), lagFrames: z.number().int().nonnegative(), rateHz: z.number().positive() }).strict().optional(),
    metrics: z.object({ validation: metricsSchema.optional(), test: metricsSchema.optional() }),
    /** Reduced-precision bundles (cortexcast quantize): what changed and what it cost on validation. */
    precision: z
      .object({
        weights: z.literal('int8'),
        activations: z.literal('int8-per-frame'),
        quantized: z.array(z.object({ name: z.string(), elements: z.number().int().positive() })),
        source: z.object({ bundle: z.string(), sha256: z.string() }),
        /** Validation-tier scores of the float source and of this bundle, and the bound it had to meet. */
        validation: z.object({ float: metricsSchema, quantized: metricsSchema, maxSsimDrop: z.number() }),
      })
      .optional(),
    provenance: z.object({ cortexcast: z.string(), node: z.string(), onnxruntime: z.string(), host: z.string().optional() }),
  })
  .strict();

export type Manifest = z.infer<typeof manifestSchema>;

/**
 * Encoder bundles map images to responses; everything that decodes responses (server, eval, the
 * decoder runner) refuses them here, naming `where` (the bundle folder when known).
 */
export function assertDecoder(m: Pick<Manifest, 'kind'>, where: string): void {
  if (m.kind === 'encoder') throw ccError('CC_ERR_WRONG_KIND', where, 'encoder', 'it maps images to responses; decode or serve a decoder bundle (ridge, cnn, gan, invenc, latent)');
}

/** A loaded bundle: manifest, model bytes and the vectors the input path needs. */
export interface DecoderBundle {
  dir: string;
  manifest: Manifest;
  model: Uint8Array;
  unitIds: number[];
  /** Per-neuron multiplier applied to raw responses (float32, exactly as in training). */
  stdScale: Float32Array;
}

/**
 * The tensor names a decoder has outside cortexcast's own protocol, on the Open Inference Protocol
 * endpoint and in `export triton` models alike, so one client talks to both: raw responses in, the
 * z-scored image and its grey levels out.
 */
export const SERVING_TENSORS = { input: 'responses', image: 'image', pixels: 'pixels' } as const;

export interface WriteBundleInput {
  name: string;
  kind: DecoderKind;
  model: Uint8Array;
  inputName: string;
  outputName: string;
  opset: number;
  unitIds: number[];
  stdScale: Float32Array;
  responseScaling: ResponseScaling;
  transform?: ResponseTransform;
  height: number;
  width: number;
  pixelMean: number;
  pixelStd: number;
  training: Manifest['training'];
  responseWindow?: Manifest['responseWindow'];
  iterative?: Manifest['iterative'];
  metrics?: Manifest['metrics'];
  precision?: Manifest['precision'];
  version: string;
  onnxruntime: string;
}

/**
 * Write a bundle folder atomically (common/atomic-dir.ts): a reader, or a process killed mid-write,
 * finds the previous bundle or this one, never a mix. Other files in the folder are kept.
 */
export function writeBundle(dirIn: string, b: WriteBundleInput): Manifest {
  const manifest: Manifest = {
    format: BUNDLE_FORMAT,
    formatVersion: BUNDLE_VERSION,
    name: b.name,
    kind: b.kind,
    createdAt: new Date().toISOString(),
    input: { neurons: b.stdScale.length, unitIdsFile: 'unit_ids.npy', stdScaleFile: 'std_scale.npy', responseScaling: b.responseScaling, transform: b.transform ?? 'none' },
    output: { height: b.height, width: b.width, pixelMean: b.pixelMean, pixelStd: b.pixelStd },
    onnx: { file: 'model.onnx', inputName: b.inputName, outputName: b.outputName, opset: b.opset, sha256: sha256(b.model) },
    ...(b.iterative ? { iterative: b.iterative } : {}),
    training: b.training,
    ...(b.responseWindow ? { responseWindow: b.responseWindow } : {}),
    metrics: b.metrics ?? {},
    ...(b.precision ? { precision: b.precision } : {}),
    provenance: { cortexcast: b.version, node: process.version, onnxruntime: b.onnxruntime, host: process.platform + '-' + process.arch },
  };
  manifestSchema.parse(manifest);
  writeDirAtomic(dirIn, (dir) => {
    writeFileSync(join(dir, 'model.onnx'), b.model);
    writeNpy(join(dir, 'std_scale.npy'), b.stdScale);
    writeNpy(join(dir, 'unit_ids.npy'), BigInt64Array.from(b.unitIds.map((u) => BigInt(u))));
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
  });
  return manifest;
}

/** Update the metrics block of a bundle on disk (after evaluation); the rest of the folder is carried over unchanged. */
export function updateBundleMetrics(dir: string, metrics: Manifest['metrics']): void {
  const b = loadBundle(dir);
  const next = { ...b.manifest, metrics: { ...b.manifest.metrics, ...metrics } };
  writeDirAtomic(dir, (tmp) => writeFileSync(join(tmp, 'manifest.json'), JSON.stringify(next, null, 2) + '\n'));
}

/** A file the manifest names, as a path inside the bundle folder (never `../x`, `/x` or a subfolder's escape). */
export function bundleFile(dir: string, name: string): string {
  if (!name.split('/').every(isPlainName)) throw ccError('CC_ERR_BUNDLE', dir, `file name ${JSON.stringify(name.slice(0, 200))} in manifest.json leaves the bundle folder; bundle files are plain names inside it`);
  return join(dir, name);
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/**
 * Load and validate a bundle; every problem is reported with the bundle's path. A folder replaced
 * while it is read (writeBundle renames the whole folder) is read again, so the manifest and the
 * files always come from one write.
 */
export function loadBundle(dirIn: string): DecoderBundle {
  const dir = resolve(dirIn);
  for (let attempt = 0; ; attempt++) {
    const from = settledDir(dir);
    const before = statSync(from, { throwIfNoEntry: false })?.ino;
    try {
      const b = loadBundleFrom(dir, from);
      if (statSync(from, { throwIfNoEntry: false })?.ino === before || attempt >= 5) return b;
    } catch (e) {
      if (statSync(from, { throwIfNoEntry: false })?.ino === before || attempt >= 5) throw e;
    }
  }
}

function loadBundleFrom(dir: string, from: string): DecoderBundle {
  const fail = (msg: string): never => {
    throw ccError('CC_ERR_BUNDLE', dir, msg);
  };
  const manifestPath = join(from, 'manifest.json');
  if (!existsSync(manifestPath)) fail('no manifest.json (is this a bundle folder?)');
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(manifestPath, 'utf8'));
  } catch (e) {
    fail(`manifest.json is not valid JSON: ${(e as Error).message}`);
  }
  const fmt = (raw as { format?: unknown; formatVersion?: unknown }) ?? {};
  if (fmt.format === BUNDLE_FORMAT && typeof fmt.formatVersion === 'number' && fmt.formatVersion > BUNDLE_VERSION)
    fail(`format version ${fmt.formatVersion} is newer than this cortexcast reads (${BUNDLE_VERSION}); upgrade cortexcast`);
  const parsed = manifestSchema.safeParse(raw);
  if (!parsed.success) fail(`manifest.json is invalid: ${parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  const manifest = parsed.data!;
  const file = (name: string): string => {
    bundleFile(dir, name);
    const p = join(from, name);
    if (!existsSync(p)) fail(`${name} is missing`);
    return p;
  };
  const model = new Uint8Array(readFileSync(file(manifest.onnx.file)));
  if (sha256(model) !== manifest.onnx.sha256) fail(`${manifest.onnx.file} does not match the manifest's sha256 (corrupted or replaced)`);
  const scaleArr = readNpy(file(manifest.input.stdScaleFile));
  const stdScale = scaleArr.data instanceof Float32Array ? scaleArr.data : Float32Array.from(npyNumbers(scaleArr));
  if (stdScale.length !== manifest.input.neurons) fail(`${manifest.input.stdScaleFile} has ${stdScale.length} values, manifest says ${manifest.input.neurons} neurons`);
  const unitIds = Array.from(npyNumbers(readNpy(file(manifest.input.unitIdsFile))));
  if (unitIds.length !== manifest.input.neurons) fail(`${manifest.input.unitIdsFile} has ${unitIds.length} ids, manifest says ${manifest.input.neurons} neurons`);
  return { dir, manifest, model, unitIds, stdScale };
}
