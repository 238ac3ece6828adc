import { writeBundle, updateBundleMetrics, type WriteBundleInput } from '../../src/models/bundle.js';

/**
 * Child process for the atomic-bundle test: with BUNDLE_WRITER_DEST set, writes two alternating
 * bundles (different neuron counts and model bytes) and metric updates there forever, printing
 * "writing" once it has started, until the parent kills it. Imported without it, only the inputs.
 */
const dest = process.env.BUNDLE_WRITER_DEST;
export const bundleInput = (variant: 0 | 1): WriteBundleInput => {
  const neurons = variant ? 150 : 100;
  const model = new Uint8Array((variant ? 3 : 2) * 2 ** 20).fill(variant ? 7 : 3);
  return {
    name: variant ? 'variant-b' : 'variant-a',
    kind: 'ridge',
    model,
    inputName: 'x',
    outputName: 'y',
    opset: 17,
    unitIds: Array.from({ length: neurons }, (_, i) => i),
    stdScale: new Float32Array(neurons).fill(variant ? 2 : 1),
    responseScaling: 'sensorium',
    height: 4,
    width: 4,
    pixelMean: 0,
    pixelStd: 1,
    training: { dataset: 'none', config: {} },
    version: 'test',
    onnxruntime: 'test',
  };
};

if (dest) {
  let i = 0;
  process.stdout.write('writing\n');
  for (;;) {
    writeBundle(dest, bundleInput((i % 2) as 0 | 1));
    updateBundleMetrics(dest, { validation: { ssim: i } });
    i++;
  }
}
