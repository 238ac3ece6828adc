/**
 * GPU check of the training engine (run on a machine with a GPU; not part of tests or CI): one training
 * step of the report's paper-size CNN and GAN generator (random data, 8,600 neurons, batch 16) and
 * batch-1 decodes of the exported graphs, per execution provider, on the same machine.
 *
 *   node --import tsx bench/gpu-train.ts [--providers webgpu,cpu] [--steps 3] [--neurons 8600] [--mei-neurons 512] [--models gan-small,gan-paper,cnn-paper]
 */
import { CNN_PROFILES, cnnDecoder } from '../src/models/architectures/cnn.js';
import { GAN_PROFILES, ganDiscriminator, ganGenerator } from '../src/models/architectures/gan.js';
import { scalar } from '../src/models/layers.js';
import { tensor, writeModel } from '../src/models/onnx/index.js';
import { createSession, runOnce, type ExecutionProvider } from '../src/models/ort.js';
import { percentile } from '../src/common/stats.js';
import { logSsimLoss, lsganLoss, mseLoss } from '../src/training/engine/losses.js';
import { TrainingSession, type TrainingSpec } from '../src/training/engine/trainer.js';

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const providers = arg('providers', 'webgpu,cpu').split(',') as ExecutionProvider[];
const steps = Number(arg('steps', '3'));
const neurons = Number(arg('neurons', '8600'));
const K = Number(arg('mei-neurons', '512'));
const batch = 16;
const rand = (n: number, scale = 1): Float32Array => Float32Array.from({ length: n }, () => (Math.random() - 0.5) * 2 * scale);

function spec(model: 'cnn' | 'gan', profile: 'paper' | 'small', provider: ExecutionProvider): TrainingSpec {
  const meis = { meis: rand(K * 36 * 64, 0.15), neuronIndex: Array.from({ length: K }, (_, i) => i * Math.floor(neurons / K)) };
  return {
    name: `${model}-${profile}`,
    outputName: 'image',
    batch,
    seed: 1,
    providers: [provider],
    model: (ctx, b) => {
      const m = model === 'cnn' ? cnnDecoder(ctx, neurons, b, CNN_PROFILES[profile]) : ganGenerator(ctx, b, GAN_PROFILES[profile], { neurons, mei: meis });
      return { inputs: [m.input], output: m.output };
    },
    objective: (ctx, out) => {
      const t = ctx.g.input('target', 'float32', [batch, 1, 36, 64]);
      if (model === 'cnn') return { targets: [t], loss: mseLoss(ctx, out, t) };
      // The generator's step with its discriminator in the graph (trained here too, for timing only).
      const adv = lsganLoss(ctx, ganDiscriminator(ctx, out, GAN_PROFILES[profile]), scalar(ctx.g, 'one', 1));
      return { targets: [t], loss: ctx.g.op('Add', [ctx.g.op('Mul', [adv, scalar(ctx.g, 'a', 0.1)]), ctx.g.op('Mul', [logSsimLoss(ctx, out, t), scalar(ctx.g, 'b', 0.9)])]) };
    },
    groups: [{ match: 'core/', lr: 3e-4, weightDecay: 0.03, clamp: 1 }, { match: '', lr: 3e-4, weightDecay: 0.03 }],
  };
}

const wanted = arg('models', 'gan-small,gan-paper,cnn-paper').split(',');
for (const [model, profile] of ([['gan', 'small'], ['gan', 'paper'], ['cnn', 'paper']] as const).filter(([m, p]) => wanted.includes(`${m}-${p}`))) {
  for (const provider of providers) {
    const t0 = performance.now();
    try {
      const ts = await TrainingSession.create(spec(model, profile, provider));
      const compileS = (performance.now() - t0) / 1000;
      const feeds = { responses: tensor('float32', [batch, neurons], rand(batch * neurons, 1).map(Math.abs)), target: tensor('float32', [batch, 1, 36, 64], rand(batch * 2304)) };
      const ms: number[] = [];
      let loss = NaN;
      for (let s = 0; s <= steps; s++) {
        const r = await ts.trainStep(feeds);
        if (s > 0) ms.push(r.ms);
        loss = r.loss;
      }
      const { session, provider: used } = await createSession(writeModel(ts.exportGraph()), { providers: [provider] });
      const x = { responses: tensor('float32', [1, neurons], rand(neurons).map(Math.abs)) };
      for (let i = 0; i < 5; i++) await runOnce(session, x);
      const inf: number[] = [];
      for (let i = 0; i < 30; i++) {
        const t = performance.now();
        await runOnce(session, x);
        inf.push(performance.now() - t);
      }
      console.log(JSON.stringify({ model, profile, provider: ts.provider, evalProvider: used, parameters: ts.parameterCount, compileS: +compileS.toFixed(1), stepMsMedian: +percentile(ms, 50).toFixed(0), loss: +loss.toFixed(4), batch1MsP50: +percentile(inf, 50).toFixed(2) }));
    } catch (e) {
      console.log(JSON.stringify({ model, profile, provider, error: (e as Error).message.split('\n')[0] }));
    }
  }
}
