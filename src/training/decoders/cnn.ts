import { CNN_PROFILES, cnnDecoder } from '../../models/architectures/cnn.js';
import { ccError } from '../../common/errors.js';
import { REFINER_LAST_LAYER, REFINER_PROFILES, refinerCorrection, type RefinerConfig } from '../../models/architectures/refiner.js';
import { anchoredResidual, anchorImageChannel, DECODER_INPUT, DECODER_OUTPUT, ridgeImage } from '../../models/architectures/ridge.js';
import type { LayerContext } from '../../models/layers.js';
import type { FidComputer } from '../eval/metrics/fid.js';
import { LOSSES } from '../engine/losses.js';
import { buildEvalGraph, TrainingSession, type TrainingSpec } from '../engine/trainer.js';
import type { Recipe } from '../run/loop.js';
import { DecoderBatch, decoderRecipe, fedAnchorInputs, sharedConfig, type DecoderSession } from './sessions.js';
import type { DecoderSettings } from './settings.js';

/**
 * The CNN decoder, trained on one session with MSE (or another --loss), AdamW. Recipe 'cortexcast'
 * (the default): ridge image + a small convolutional correction of it (refiner.ts). Recipe 'report': the
 * report's FC readin + transposed convolutions; with a ridge anchor it learns a correction added to
 * the ridge image.
 */
export async function cnnRecipe(s: DecoderSettings, sessions: DecoderSession[], fid: FidComputer): Promise<{ recipe: Recipe; generator: TrainingSession }> {
  const [sess] = sessions;
  const { data } = sess;
  const { height: H, width: W } = data;
  if (s.profile === 'realtime') throw ccError('CC_ERR_OPTION', "profile 'realtime' is the GAN's; the CNN's small profile is its real-time one");
  const cfg = CNN_PROFILES[s.profile];
  const refiner = s.recipe === 'cortexcast' ? { ...refinerProfile(s.profile), ...(s.refinerLevels !== undefined && { levels: s.refinerLevels }) } : undefined;
  if (refiner && !sess.anchor) throw ccError('CC_ERR_OPTION', "cortexcast's CNN refines the ridge image: it needs the ridge anchor (or --recipe report)");
  const lossName = s.loss ?? 'mse';
  const spec: TrainingSpec = {
    name: 'cnn',
    outputName: DECODER_OUTPUT,
    batch: s.batch,
    seed: s.seed,
    threads: s.threads,
    model: (ctx, b) => {
      if (refiner) {
        const input = ctx.g.input(DECODER_INPUT, 'float32', [b, data.neurons]);
        const base = ridgeImage(ctx, input, sess.anchor!);
        const output = anchoredResidual(ctx, anchorImageChannel(ctx, base, sess.anchor!), refinerCorrection(ctx, base, refiner), REFINER_LAST_LAYER);
        return { inputs: [input], output, stepInputs: fedAnchorInputs(ctx, sessions, [base]) };
      }
      const m = cnnDecoder(ctx, data.neurons, b, cfg);
      if (!sess.anchor) return { inputs: [m.input], output: m.output };
      const base = ridgeImage(ctx, m.input, sess.anchor);
      return { inputs: [m.input], output: anchoredResidual(ctx, base, m.output, `core/layer${cfg.core.length - 1}/`), stepInputs: fedAnchorInputs(ctx, sessions, [base]) };
    },
    objective: (ctx: LayerContext, out) => {
      const t = ctx.g.input('target', 'float32', [s.batch, 1, H, W]);
      return { targets: [t], loss: LOSSES[lossName](ctx, out, t) };
    },
    groups: [{ match: '', lr: s.lr, weightDecay: s.weightDecay }],
    optimizer: { kind: 'adamw' },
  };
  const G = await TrainingSession.create(spec);
  const batch = await DecoderBatch.create(sessions, s.batch, G.stepInputNames, s.pairs);
  const config = { kind: 'cnn', profile: s.profile, recipe: s.recipe, architecture: refiner ? { refiner } : cfg, loss: lossName, ...sharedConfig(s), data: sess.ds.dir, parameters: G.parameterCount };
  s.log(`cnn (${s.profile}${refiner ? `, ridge refiner${sess.anchor!.channels > 1 ? ' with the contrast read-out' : ''}` : sess.anchor ? ', ridge-anchored' : ''}): ${G.parameterCount.toLocaleString()} parameters, ${data.neurons} neurons, batch ${s.batch}`);
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

function refinerProfile(profile: Exclude<DecoderSettings['profile'], 'realtime'>): RefinerConfig {
  if (profile === 'appendix') throw ccError('CC_ERR_OPTION', "profile 'appendix' is the report's CNN: use it with --recipe report");
  return REFINER_PROFILES[profile];
}
