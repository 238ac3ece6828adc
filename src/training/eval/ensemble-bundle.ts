import ort from 'onnxruntime-node';
import { VERSION } from '../../common/version.js';
import { loadBundle, writeBundle, type Manifest } from '../../models/bundle.js';
import { ensembleModel } from '../../models/ensemble.js';
import { evaluateBundle } from './evaluate.js';

export interface EnsembleBundleOptions {
  members: string[];
  out: string;
  name?: string;
  /** Dataset to score the ensemble on (validation tier), recorded in its manifest. */
  data?: string;
  log?: (s: string) => void;
}

/**
 * `cortexcast ensemble`: the members' graphs averaged in one bundle (models/ensemble.ts). With
 * --data, the ensemble and each member are scored on the validation tier, so whether averaging helps
 * is judged where every other choice is.
 */
export async function ensembleBundle(o: EnsembleBundleOptions): Promise<Manifest> {
  const log = o.log ?? ((s: string) => void process.stderr.write(s + '\n'));
  const members = o.members.map((d) => loadBundle(d));
  const m0 = members[0].manifest;
  const { model, opset } = ensembleModel(members);
  const kinds = [...new Set(members.map((b) => b.manifest.kind))];
  const common = {
    name: o.name ?? `${m0.name}-ensemble${members.length}`,
    kind: kinds.length === 1 ? kinds[0] : m0.kind,
    model,
    inputName: m0.onnx.inputName,
    outputName: m0.onnx.outputName,
    opset,
    unitIds: members[0].unitIds,
    stdScale: members[0].stdScale,
    responseScaling: m0.input.responseScaling,
    transform: m0.input.transform,
    height: m0.output.height,
    width: m0.output.width,
    pixelMean: m0.output.pixelMean,
    pixelStd: m0.output.pixelStd,
    training: { dataset: m0.training.dataset, config: { ensembleOf: members.map((b) => ({ name: b.manifest.name, kind: b.manifest.kind, sha256: b.manifest.onnx.sha256 })) } },
    version: VERSION,
    onnxruntime: ort.env.versions.node ?? 'unknown',
  };
  const manifest = writeBundle(o.out, common);
  if (!o.data) return manifest;
  const scores = async (dir: string): Promise<Record<string, number>> => {
    const m = (await evaluateBundle(dir, o.data!, { tier: 'validation', fid: 0 })).metrics;
    return { ssim: m.ssim, ssiml: m.ssiml, mse: m.mse, pixcorr: m.pixcorr };
  };
  for (const b of members) {
    const s = await scores(b.dir);
    log(`ensemble member ${b.manifest.name}: validation SSIML ${s.ssiml.toFixed(4)} MSE ${s.mse.toFixed(5)}`);
  }
  const validation = await scores(o.out);
  log(`ensemble ${common.name}: validation SSIML ${validation.ssiml.toFixed(4)} MSE ${validation.mse.toFixed(5)}`);
  return writeBundle(o.out, { ...common, metrics: { validation } });
}
