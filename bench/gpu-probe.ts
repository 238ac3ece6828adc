/**
 * GPU check for a machine with a GPU: can onnxruntime-node load each execution provider, and how fast
 * is a batch-1 decode of the ridge-sized and small-CNN decoders on it? Prints one line per
 * (provider, model): the provider that served (ORT throws for an absent one; we catch and report)
 * and median latency over 50 runs. Never used by tests.
 *
 *   node --import tsx bench/gpu-probe.ts [--neurons 8600]
 */
import ort from 'onnxruntime-node';
import { cnnDecoder, CNN_PROFILES } from '../src/models/architectures/cnn.js';
import { buildRidgeGraph, DECODER_OUTPUT } from '../src/models/architectures/ridge.js';
import { newGraph, writeModel } from '../src/models/onnx/index.js';
import { createSession, type ExecutionProvider } from '../src/models/ort.js';
import { Rng } from '../src/models/rng.js';

const i = process.argv.indexOf('--neurons');
const neurons = i >= 0 ? Number(process.argv[i + 1]) : 8600;
const rng = new Rng(1);
const ridge = writeModel(buildRidgeGraph(Float32Array.from({ length: neurons * 2304 }, () => rng.normal() * 0.01), new Float32Array(2304), neurons, 36, 64));
const g = newGraph('cnn');
g.output(cnnDecoder({ g, rng: new Rng(2) }, neurons, 'batch', CNN_PROFILES.small).output, DECODER_OUTPUT);
const cnnSmall = writeModel(g);
const g2 = newGraph('cnn_paper');
g2.output(cnnDecoder({ g: g2, rng: new Rng(3) }, neurons, 'batch', CNN_PROFILES.paper).output, DECODER_OUTPUT);
const cnnPaper = writeModel(g2);
console.log(`onnxruntime-node ${ort.env.versions.node}, backends: ${JSON.stringify(ort.listSupportedBackends?.() ?? [])}`);
for (const provider of ['webgpu', 'cuda', 'cpu'] as ExecutionProvider[]) {
  for (const [name, model] of [['ridge', ridge], ['cnn-small', cnnSmall], ['cnn-paper', cnnPaper]] as const) {
    try {
      const s = await createSession(model, { providers: [provider], intraOpThreads: 4 });
      const x = new ort.Tensor('float32', new Float32Array(neurons).fill(0.5), [1, neurons]);
      const t: number[] = [];
      for (let k = 0; k < 60; k++) {
        const t0 = performance.now();
        await s.session.run({ responses: x });
        if (k >= 10) t.push(performance.now() - t0);
      }
      t.sort((a, b) => a - b);
      console.log(`${provider.padEnd(6)} ${name.padEnd(9)} served by ${s.provider}: batch-1 decode p50 ${t[25].toFixed(2)} ms, p90 ${t[45].toFixed(2)} ms`);
    } catch (e) {
      console.log(`${provider.padEnd(6)} ${name.padEnd(9)} FAILED: ${(e as Error).message.split('\n')[0]}`);
    }
  }
}
