import { existsSync, readdirSync, rmSync } from 'node:fs';
import { resolve } from 'node:path';
import ort from 'onnxruntime-node';
import { ccError } from '../../common/errors.js';
import { VERSION } from '../../common/version.js';
import { assertDecoder, loadBundle, writeBundle, type Manifest } from '../../models/bundle.js';
import { quantizeModel } from '../../models/quantize.js';
import { evaluateBundle } from './evaluate.js';

export interface QuantizeBundleOptions {
  model: string;
  out: string;
  /** Dataset whose validation tier measures the change (default: the one the bundle was trained on). */
  data?: string;
  /** Refuse when validation SSIM falls by more than this (default 0.005). */
  maxSsimDrop?: number;
  /** Write the bundle even when the drop is over the bound (the manifest still records it). */
  force?: boolean;
  minWeights?: number;
  log?: (s: string) => void;
}

export const DEFAULT_MAX_SSIM_DROP = 0.005;

/**
 * `cortexcast quantize`: the bundle with int8 MatMul weights (models/quantize.ts), its validation
 * SSIM/MSE/PixCorr measured against the float bundle's on the same trials and recorded in the
 * manifest; over `maxSsimDrop` it is refused (nothing is left at `out`) unless forced.
 */
export async function quantizeBundle(o: QuantizeBundleOptions): Promise<Manifest> {
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const src = loadBundle(o.model);
  const m = src.manifest;
  assertDecoder(m, src.dir);
  if (m.precision) throw ccError('CC_ERR_QUANTIZE', src.dir, 'this bundle is already quantized; quantize its float source');
  if (m.iterative) throw ccError('CC_ERR_QUANTIZE', src.dir, 'iterative (invenc) bundles run an encoder step many times; quantizing them is not supported');
  const data = o.data ?? m.training.dataset;
  if (!existsSync(resolve(data, 'meta'))) throw ccError('CC_ERR_QUANTIZE', src.dir, `no dataset at ${data} to measure the change on; give --data`);
  if (existsSync(o.out) && readdirSync(o.out).length) throw ccError('CC_ERR_QUANTIZE', src.dir, `${o.out} exists and is not empty; give a new folder`);
  const q = quantizeModel(src.model, { minWeights: o.minWeights });
  if (!q.quantized.length) throw ccError('CC_ERR_QUANTIZE', src.dir, 'no MatMul has a constant weight large enough to be worth int8 (nothing would change)');
  const bound = o.maxSsimDrop ?? DEFAULT_MAX_SSIM_DROP;
  const common = {
    name: `${m.name}-int8`,
    kind: m.kind,
    model: q.model,
    inputName: m.onnx.inputName,
    outputName: m.onnx.outputName,
    opset: q.opset,
    unitIds: src.unitIds,
    stdScale: src.stdScale,
    responseScaling: m.input.responseScaling,
    transform: m.input.transform,
    height: m.output.height,
    width: m.output.width,
    pixelMean: m.output.pixelMean,
    pixelStd: m.output.pixelStd,
    training: m.training,
    ...(m.responseWindow ? { responseWindow: m.responseWindow } : {}),
    version: VERSION,
    onnxruntime: ort.env.versions.node ?? 'unknown',
  };
  const float = (await evaluateBundle(src.dir, data, { tier: 'validation', fid: 0 })).metrics;
  // Written first without the measurement, so the evaluation reads it the way the server will.
  writeBundle(o.out, common);
  const quantized = (await evaluateBundle(o.out, data, { tier: 'validation', fid: 0 })).metrics;
  const drop = float.ssim - quantized.ssim;
  const scores = (x: typeof float): Record<string, number> => ({ ssim: x.ssim, ssiml: x.ssiml, mse: x.mse, pixcorr: x.pixcorr });
  log(
    `quantize ${m.name}: ${q.quantized.map((w) => `${w.name} (${w.elements.toLocaleString()} weights)`).join(', ')} -> int8; model ${(src.model.length / 2 ** 20).toFixed(1)} -> ${(q.model.length / 2 ** 20).toFixed(1)} MB; validation SSIM ${float.ssim.toFixed(4)} -> ${quantized.ssim.toFixed(4)}, MSE ${float.mse.toFixed(5)} -> ${quantized.mse.toFixed(5)}`,
  );
  const manifest = writeBundle(o.out, {
    ...common,
    metrics: { validation: scores(quantized) },
    precision: {
      weights: 'int8',
      activations: 'int8-per-frame',
      quantized: q.quantized,
      source: { bundle: src.dir, sha256: m.onnx.sha256 },
      validation: { float: scores(float), quantized: scores(quantized), maxSsimDrop: bound },
    },
  });
  if (drop > bound && !o.force) {
    rmSync(o.out, { recursive: true, force: true });
    throw ccError('CC_ERR_QUANTIZE', src.dir, `validation SSIM fell by ${drop.toFixed(4)}, over the bound ${bound} (--max-ssim-drop); nothing written (--force writes it anyway, the manifest records the drop)`);
  }
  return manifest;
}
