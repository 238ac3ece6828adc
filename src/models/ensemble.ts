import { ccError } from '../common/errors.js';
import type { DecoderBundle } from './bundle.js';
import { mergeModel, newGraph, readModel, tensor, writeModel, type Value } from './onnx/index.js';

/**
 * One graph that runs several decoders on the same responses and averages their images: an
 * ensemble served as one model (one session, one decode per frame). The members must read the same
 * input (unit ids, std scaling, transform) and write the same image (size, pixel normalisation), so
 * their outputs average in the same z-scored pixel space; iterative decoders are refused. Weights the
 * members share (the ridge map under ridge-anchored decoders of one dataset) are stored once.
 */
export function ensembleModel(members: readonly DecoderBundle[]): { model: Uint8Array; opset: number } {
  if (members.length < 2) throw ccError('CC_ERR_OPTION', 'an ensemble needs at least 2 member bundles');
  const first = members[0];
  const m0 = first.manifest;
  for (const b of members) {
    const m = b.manifest;
    const differs = (what: string): never => {
      throw ccError('CC_ERR_BUNDLE', b.dir, `cannot join an ensemble with ${first.dir}: its ${what} differs`);
    };
    if (m.iterative) throw ccError('CC_ERR_BUNDLE', b.dir, 'iterative decoders (invenc) cannot join an ensemble: their graph is one optimisation step');
    if (m.kind === 'encoder') throw ccError('CC_ERR_WRONG_KIND', b.dir, 'encoder', 'ensembles average decoders');
    if (b.unitIds.length !== first.unitIds.length || b.unitIds.some((u, i) => u !== first.unitIds[i])) differs('unit ids');
    if (b.stdScale.some((v, i) => v !== first.stdScale[i])) differs('std scaling (trained on other data?)');
    if (m.input.transform !== m0.input.transform || m.input.responseScaling !== m0.input.responseScaling) differs('response transform');
    if (m.output.height !== m0.output.height || m.output.width !== m0.output.width) differs('image size');
    if (m.output.pixelMean !== m0.output.pixelMean || m.output.pixelStd !== m0.output.pixelStd) differs('pixel normalisation');
  }
  const g = newGraph('ensemble');
  const parsed = members.map((b) => readModel(b.model));
  g.opset = Math.max(...parsed.map((p) => p.opset));
  const input0 = parsed[0].graph.inputs.find((v) => v.name === m0.onnx.inputName);
  if (!input0) throw ccError('CC_ERR_BUNDLE', first.dir, `model.onnx has no input '${m0.onnx.inputName}'`);
  const responses = g.input(m0.onnx.inputName, input0.dtype, input0.shape);
  const sharedWeights = new Map<string, Value>();
  const images: Value[] = members.map((b, k) => {
    const outputs = mergeModel(g, b.model, `member${k}/`, new Map([[b.manifest.onnx.inputName, responses]]), sharedWeights);
    const image = outputs.get(b.manifest.onnx.outputName);
    if (!image) throw ccError('CC_ERR_BUNDLE', b.dir, `model.onnx has no output '${b.manifest.onnx.outputName}'`);
    return image;
  });
  const sum = images.slice(1).reduce((acc, v) => g.op('Add', [acc, v]), images[0]);
  const mean = g.op('Mul', [sum, g.initializer('ensemble_weight', tensor('float32', [], [1 / members.length]))]);
  g.output(mean, m0.onnx.outputName);
  return { model: writeModel(g, { docString: `mean of ${members.length} decoders: ${members.map((b) => b.manifest.name).join(', ')}` }), opset: g.opset };
}
