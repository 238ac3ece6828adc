import { CNN_PROFILES, cnnDecoder } from '../../models/architectures/cnn.js';
import { anchoredResidual, DECODER_OUTPUT, ridgeImage } from '../../models/architectures/ridge.js';
import type { LayerContext } from '../../models/layers.js';
import type { FidComputer } from '../eval/metrics/fid.js';
import { LOSSES } from '../engine/losses.js';
import { buildEvalGraph, TrainingSession, type TrainingSpec } from '../engine/trainer.js';
import type { Recipe } from '../run/loop.js';
import { DecoderBatch, decoderRecipe, sharedConfig, type DecoderSession } from './sessions.js';
import type { DecoderSettings } from './settings.js';

/**
 * The report's CNN decoder: FC readin + transposed convolutions, trained on one session with MSE (or
 * another --loss), AdamW. With a ridge anchor the network learns a gated correction of the ridge image.
 */
export async function cnnRecipe(s: DecoderSettings, sessions: DecoderSession[], fid: FidComputer): Promise<{ recipe: Recipe; generator: TrainingSession }> {
  const [sess] = sessions;
  const { data } = sess;
  const { height: H, width: W } = data;
  const cfg = CNN_PROFILES[s.profile];
  const lossName = s.loss ?? 'mse';
  const spec: TrainingSpec = {
    name: 'cnn',
    outputName: DECODER_OUTPUT,
    batch: s.batch,
    seed: s.seed,
    threads: s.threads,
    model: (ctx, b) => {
      const m = cnnDecoder(ctx, data.neurons, b, cfg);
      return { inputs: [m.input], output: sess.anchor ? anchoredResidual(ctx, ridgeImage(ctx, m.input, sess.anchor), m.output, `core/layer${cfg.core.length - 1}/`) : m.output };
    },
    objective: (ctx: LayerContext, out) => {
      const t = ctx.g.input('target', 'float32', [s.batch, 1, H, W]);
      return { targets: [t], loss: LOSSES[lossName](ctx, out, t) };
    },
    groups: [{ match: '', lr: s.lr, weightDecay: s.weightDecay }],
    optimizer: { kind: 'adamw' },
  };
  const G = await TrainingSession.create(spec);
  const batch = new DecoderBatch(sessions, s.batch, s.pairs);
  const config = { kind: 'cnn', profile: s.profile, architecture: cfg, loss: lossName, ...sharedConfig(s), data: sess.ds.dir, parameters: G.parameterCount };
  s.log(`cnn (${s.profile}${sess.anchor ? ', ridge-anchored' : ''}): ${G.parameterCount.toLocaleString()} parameters, ${data.neurons} neurons, batch ${s.batch}`);
  const recipe = decoderRecipe('cnn', s, sessions, fid, config, {
    generator: G,
    graphs: () => [buildEvalGraph(spec, G.modelTensors(), false).graph],
    step: async (rows, rng) => {
      const r = await G.trainStep(await batch.fill(rows, rng));
      return { loss: r.loss, ms: G.lastStepMs };
    },
    checkpointed: { generator: G },
  });
  return { recipe, generator: G };
}
