import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { writeDirAtomic } from '../common/atomic-dir.js';
import { ccError, quoted } from '../common/errors.js';
import { loadBundle, assertDecoder, SERVING_TENSORS, type DecoderBundle } from './bundle.js';
import { readModel, tensor, writeModel, type Graph, type Value } from './onnx/index.js';

const TRITON_TENSORS = SERVING_TENSORS;

export interface InstanceGroup {
  kind: 'gpu' | 'cpu' | 'auto';
  count: number;
}

export interface TritonExportOptions {
  /** Model name in the repository (default: the bundle folder's manifest name). */
  name?: string;
  /** Triton's max_batch_size: frames of different rigs batched into one run. */
  maxBatch: number;
  /** Dynamic batching: how long a request may wait for others (microseconds). */
  queueDelayUs: number;
  instances: InstanceGroup[];
}

export const DEFAULT_TRITON_EXPORT: TritonExportOptions = { maxBatch: 64, queueDelayUs: 100, instances: [{ kind: 'gpu', count: 1 }, { kind: 'cpu', count: 1 }] };

/** 'gpu:1,cpu:2' -> instance groups. */
export function parseInstances(spec: string): InstanceGroup[] {
  return spec.split(',').map((part) => {
    const [kind, count = '1'] = part.trim().split(':');
    const n = Number(count);
    if ((kind !== 'gpu' && kind !== 'cpu' && kind !== 'auto') || !Number.isInteger(n) || n < 1)
      throw ccError('CC_ERR_OPTION', `--instances: '${part}' is not kind:count with kind gpu, cpu or auto and count >= 1`);
    return { kind, count: n };
  });
}

/**
 * The bundle's decoder as one ONNX graph from raw responses to the image: the std scaling (and the
 * response transform) first, exactly as the server applies them, then the trained graph, then the
 * grey-level conversion as a second output. Triton then serves what cortexcast serves.
 */
export function tritonGraph(b: DecoderBundle): Uint8Array {
  const man = b.manifest;
  const n = man.input.neurons;
  const read = readModel(b.model, {
    prelude: (g: Graph, input): Value => {
      const batch = input.shape[0] ?? 'batch';
      const responses = g.input(TRITON_TENSORS.input, 'float32', [batch, n]);
      const scale = g.initializer('cortexcast/std_scale', tensor('float32', [n], b.stdScale), { exactName: true });
      const [scaled] = g.opN('Mul', [responses, scale], {}, { name: 'cortexcast/std_scaling' });
      if (man.input.transform === 'none') return scaled;
      // log10(max(r, 1e-3)), the report's "T" transform, as applyResponseTransform computes it.
      const floor = g.initializer('cortexcast/transform_floor', tensor('float32', [], [1e-3]), { exactName: true });
      const invLn10 = g.initializer('cortexcast/inv_ln10', tensor('float32', [], [1 / Math.LN10]), { exactName: true });
      const [clamped] = g.opN('Max', [scaled, floor], {}, { name: 'cortexcast/transform_max' });
      const [ln] = g.opN('Log', [clamped], {}, { name: 'cortexcast/transform_log' });
      return g.opN('Mul', [ln, invLn10], {}, { name: 'cortexcast/transform_log10' })[0];
    },
  });
  const g = read.graph;
  let image = g.outputs.find((v) => v.name === man.onnx.outputName) ?? g.outputs[0];
  if (image.name !== TRITON_TENSORS.image) image = g.opN('Identity', [image], {}, { name: 'cortexcast/image', outputNames: [TRITON_TENSORS.image] })[0];
  // Grey levels as toGrey computes them: round(v * std + mean) clamped to 0..255.
  const std = g.initializer('cortexcast/pixel_std', tensor('float32', [], [man.output.pixelStd]), { exactName: true });
  const meanHalf = g.initializer('cortexcast/pixel_mean_plus_half', tensor('float32', [], [man.output.pixelMean + 0.5]), { exactName: true });
  const lo = g.initializer('cortexcast/grey_min', tensor('float32', [], [0]), { exactName: true });
  const hi = g.initializer('cortexcast/grey_max', tensor('float32', [], [255]), { exactName: true });
  const [scaledGrey] = g.opN('Mul', [image, std], {}, { name: 'cortexcast/grey_scale' });
  const [shifted] = g.opN('Add', [scaledGrey, meanHalf], {}, { name: 'cortexcast/grey_shift' });
  const [floored] = g.opN('Floor', [shifted], {}, { name: 'cortexcast/grey_round' });
  const [clipped] = g.opN('Clip', [floored, lo, hi], {}, { name: 'cortexcast/grey_clip' });
  const [pixels] = g.opN('Cast', [clipped], { to: 2 }, { name: 'cortexcast/grey_cast', outputNames: [TRITON_TENSORS.pixels] });
  g.outputs.length = 0;
  g.outputs.push(image, pixels);
  return writeModel(g, { docString: `cortexcast ${man.kind} decoder ${man.name}: raw responses in, image and grey levels out`, metadata: { ...read.metadata, 'cortexcast.kind': man.kind, 'cortexcast.source_sha256': man.onnx.sha256 } });
}

/** config.pbtxt (protobuf text format of Triton's ModelConfig). */
export function tritonConfig(name: string, b: DecoderBundle, o: TritonExportOptions): string {
  const { neurons } = b.manifest.input;
  const { height, width } = b.manifest.output;
  const preferred = [1, 2, 4, 8, 16, 32, 64, 128, 256].filter((x) => x > 1 && x <= o.maxBatch);
  const kind = { gpu: 'KIND_GPU', cpu: 'KIND_CPU', auto: 'KIND_AUTO' } as const;
  return [
    `# Written by cortexcast export triton from bundle ${b.manifest.name} (${b.manifest.kind}).`,
    `# Input: raw responses (std scaling is in the graph). Outputs: z-scored image, grey levels.`,
    `name: "${name}"`,
    `backend: "onnxruntime"`,
    `max_batch_size: ${o.maxBatch}`,
    `input [`,
    `  { name: "${TRITON_TENSORS.input}" data_type: TYPE_FP32 dims: [ ${neurons} ] }`,
    `]`,
    `output [`,
    `  { name: "${TRITON_TENSORS.image}" data_type: TYPE_FP32 dims: [ 1, ${height}, ${width} ] },`,
    `  { name: "${TRITON_TENSORS.pixels}" data_type: TYPE_UINT8 dims: [ 1, ${height}, ${width} ] }`,
    `]`,
    `dynamic_batching {`,
    ...(preferred.length ? [`  preferred_batch_size: [ ${preferred.join(', ')} ]`] : []),
    `  max_queue_delay_microseconds: ${o.queueDelayUs}`,
    `}`,
    `instance_group [`,
    o.instances.map((g) => `  { count: ${g.count} kind: ${kind[g.kind]} }`).join(',\n'),
    `]`,
    `parameters { key: "cortexcast_kind" value: { string_value: "${b.manifest.kind}" } }`,
    '',
  ].join('\n');
}

/** A name Triton loads as one model folder: no `.`/`..`, no hidden (leading-dot) folder, no separator. */
const NAME = /^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$/;

/**
 * Write REPO/<name>/config.pbtxt and REPO/<name>/1/model.onnx, as one atomic folder swap: a Triton
 * polling the repository sees the previous model folder or this one, never a half-written file.
 * Other versions already in the model folder are kept.
 */
export function exportTriton(bundleDir: string, repoDir: string, opts: Partial<TritonExportOptions> = {}): { dir: string; name: string; config: string } {
  const o = { ...DEFAULT_TRITON_EXPORT, ...opts };
  const b = loadBundle(bundleDir);
  assertDecoder(b.manifest, b.dir);
  if (b.manifest.iterative)
    throw ccError('CC_ERR_WRONG_KIND', b.dir, b.manifest.kind, 'an iterative decoder runs an optimisation loop per frame, which a Triton onnxruntime model cannot hold; serve it with cortexcast');
  if (!Number.isInteger(o.maxBatch) || o.maxBatch < 1) throw ccError('CC_ERR_OPTION', `--max-batch must be a positive integer, got ${o.maxBatch}`);
  const name = o.name ?? b.manifest.name;
  if (!NAME.test(name)) throw ccError('CC_ERR_OPTION', `model name ${quoted(name)} (--name, else the bundle's manifest name): Triton model names here are 1-64 of A-Z a-z 0-9 . _ -, not starting with '.'`);
  const repo = resolve(repoDir);
  const dir = join(repo, name);
  if (dirname(dir) !== repo) throw ccError('CC_ERR_OPTION', `model name ${quoted(name)} does not name a folder directly inside the repository ${repo}`);
  const model = tritonGraph(b);
  const config = tritonConfig(name, b, o);
  writeDirAtomic(dir, (tmp) => {
    mkdirSync(join(tmp, '1'));
    writeFileSync(join(tmp, '1', 'model.onnx'), model);
    writeFileSync(join(tmp, 'config.pbtxt'), config);
  });
  return { dir, name, config };
}
