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
 * The CNN decoder, trained with MSE (or another --loss), AdamW. Recipe 'cortexcast' (the default):
 * ridge image + a small convolutional correction of it (refiner.ts). Recipe 'report': the report's FC
 * readin + transposed convolutions (one session); with a ridge anchor it learns a correction added to
 * the ridge image.
 *
 * Several sessions (animals): the cortexcast recipe's refiner is one network shared by all, each
 * session read in by its own ridge (its anchor) - a core trained across animals with one readin per
 * animal. Each batch holds `batch` rows of every session; each session's bundle is its ridge + the
 * shared refiner.
 */
export async function cnnRecipe(s: DecoderSettings, sessions: DecoderSession[], fid: FidComputer): Promise<{ recipe: Recipe; generator: TrainingSession }> {
  const [sess] = sessions;
  const { data } = sess;
  const S = sessions.length;
  const { height: H, width: W } = data;
  if (s.profile === 'realtime') throw ccError('CC_ERR_OPTION', "profile 'realtime' is the GAN's; the CNN's small profile is its real-time one");
  const cfg = CNN_PROFILES[s.profile];
  const refiner = s.recipe === 'cortexcast' ? { ...refinerProfile(s.profile), ...(s.refinerLevels !== undefined && { levels: s.refinerLevels }) } : undefined;
  if (refiner && !sess.anchor) throw ccError('CC_ERR_OPTION', "cortexcast's CNN refines the ridge image: it needs the ridge anchor (or --recipe report)");
  if (S > 1 && !refiner) throw ccError('CC_ERR_OPTION', "several sessions train cortexcast's CNN (one refiner over each session's ridge); the report's CNN trains on one");
  if (new Set(sessions.map((x) => x.anchor?.channels)).size > 1) throw ccError('CC_ERR_OPTION', 'every session needs the same ridge read-outs (image, and contrast when on)');
  const lossName = s.loss ?? 'mse';
  const spec: TrainingSpec = {
    name: 'cnn',
    outputName: DECODER_OUTPUT,
    batch: s.batch,
    seed: s.seed,
    threads: s.threads,
    model: (ctx, b) => {
      if (refiner && S > 1) {
        const inputs = sessions.map((x, k) => ctx.g.input(`${DECODER_INPUT}_${k}`, 'float32', [b, x.data.neurons]));
        const bases = inputs.map((x, k) => ridgeImage(ctx, x, sessions[k].anchor!, `anchor_${k}`));
        const base = ctx.g.op('Concat', bases, { axis: 0 });
        const output = anchoredResidual(ctx, anchorImageChannel(ctx, base, sess.anchor!), refinerCorrection(ctx, base, refiner), REFINER_LAST_LAYER);
        return { inputs, output, stepInputs: fedAnchorInputs(ctx, sessions, bases) };
      }
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
      const t = ctx.g.input('target', 'float32', [S * s.batch, 1, H, W]);
      return { targets: [t], loss: LOSSES[lossName](ctx, out, t) };
    },
    groups: [{ match: '', lr: s.lr, weightDecay: s.weightDecay }],
    optimizer: { kind: 'adamw' },
  };
  /** Session k's decoder alone (its ridge + the shared refiner): what its bundle holds. */
  const sessionSpec = (k: number): TrainingSpec => ({
    ...spec,
    model: (ctx, b) => {
      const input = ctx.g.input(DECODER_INPUT, 'float32', [b, sessions[k].data.neurons]);
      const base = ridgeImage(ctx, input, sessions[k].anchor!);
      return { inputs: [input], output: anchoredResidual(ctx, anchorImageChannel(ctx, base, sessions[k].anchor!), refinerCorrection(ctx, base, refiner!), REFINER_LAST_LAYER) };
    },
  });
  const G = await TrainingSession.create(spec);
  const batch = await DecoderBatch.create(sessions, s.batch, G.stepInputNames, s.pairs, s.responseNoise);
  const config = { kind: 'cnn', profile: s.profile, recipe: s.recipe, architecture: refiner ? { refiner } : cfg, loss: lossName, ...sharedConfig(s), data: sess.ds.dir, sessions: S > 1 ? sessions.map((x) => x.ds.dir) : undefined, parameters: G.parameterCount };
  s.log(
    `cnn (${s.profile}${refiner ? `, ridge refiner${sess.anchor!.channels > 1 ? ' with the contrast read-out' : ''}` : sess.anchor ? ', ridge-anchored' : ''}): ${G.parameterCount.toLocaleString()} parameters, ` +
      `${sessions.map((x) => x.data.neurons).join(' + ')} neurons, batch ${s.batch}${S > 1 ? ` per session (${S} sessions, one refiner)` : ''}`,
  );
  const recipe = decoderRecipe('cnn', s, sessions, fid, config, {
    generator: G,
    graphs: () => (S > 1 ? sessions.map((_, k) => buildEvalGraph(sessionSpec(k), G.modelTensors(), false).graph) : [buildEvalGraph(spec, G.modelTensors(), false).graph]),
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
