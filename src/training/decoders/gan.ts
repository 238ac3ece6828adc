import { ccError } from '../../common/errors.js';
import { GAN_PROFILES, ganDiscriminator, ganGenerator, multiSessionGenerator, type GanConfig } from '../../models/architectures/gan.js';
import { DECODER_OUTPUT } from '../../models/architectures/ridge.js';
import { reduce, scalar, type LayerContext } from '../../models/layers.js';
import { tensor, type Value } from '../../models/onnx/index.js';
import type { Rng } from '../../models/rng.js';
import { loadMeis } from '../encoder/meis.js';
import type { FidComputer } from '../eval/metrics/fid.js';
import { LOSSES, lsganLoss } from '../engine/losses.js';
import { buildEvalGraph, TrainingSession, type TrainingSpec } from '../engine/trainer.js';
import type { Recipe } from '../run/loop.js';
import { DecoderBatch, decoderRecipe, fedAnchorInputs, sharedConfig, type DecoderSession } from './sessions.js';
import type { DecoderSettings } from './settings.js';

export interface GanOptions {
  readin?: GanConfig['readin'];
  coordinates?: boolean;
}

/** The GAN's architecture for these settings: the profile's sizes with the chosen readin and ablations. */
export function ganConfig(s: Pick<DecoderSettings, 'profile'>, g: GanOptions): GanConfig {
  if (s.profile === 'appendix') throw ccError('CC_ERR_OPTION', "profile 'appendix' is the CNN's; the GAN has 'paper', 'small' and 'realtime'");
  const readin = g.readin ?? 'mei';
  if (s.profile === 'realtime' && readin === 'fc') throw ccError('CC_ERR_OPTION', "profile 'realtime' makes the MEI or grid readin cheap (a coarser grid); with --readin fc use the small profile");
  return { ...GAN_PROFILES[s.profile], readin, coordinates: !!g.coordinates };
}

/** Attach each session's MEIs (and, for the "C" ablation, its neurons' coordinates) to the readin inputs. */
export function attachMeis(cfg: GanConfig, sessions: DecoderSession[], meiDirs: string[]): void {
  if (cfg.readin === 'fc') return;
  if (!meiDirs.length) throw ccError('CC_ERR_OPTION', `the GAN with ${cfg.readin === 'mei' ? 'MEI' : 'grid'} readin needs --meis <folder> (cortexcast meis${cfg.readin === 'grid' ? '; its neurons are used, not its MEIs' : ''})`);
  if (meiDirs.length !== sessions.length) throw ccError('CC_ERR_OPTION', `${sessions.length} sessions but ${meiDirs.length} MEI folders (one per session, in the same order)`);
  sessions.forEach((sess, k) => {
    const m = loadMeis(meiDirs[k]);
    if (m.height !== cfg.height || m.width !== cfg.width) throw ccError('CC_ERR_MEIS', meiDirs[k], `MEIs are ${m.height}x${m.width}, the decoder's images ${cfg.height}x${cfg.width}`);
    if (m.neuronIndex.some((i) => i >= sess.data.neurons)) throw ccError('CC_ERR_MEIS', meiDirs[k], `MEIs index neurons beyond session ${sess.ds.dir}'s ${sess.data.neurons}`);
    sess.mei = { meis: m.meis, neuronIndex: m.neuronIndex };
    if (cfg.coordinates) {
      if (!sess.ds.coordinates) throw ccError('CC_ERR_DATASET_MISSING', sess.ds.dir, 'the coordinates ablation needs meta/neurons/cell_motor_coordinates.npy');
      sess.mei.coordinates = normalisedCoordinates(sess.ds.coordinates, m.neuronIndex);
    }
  });
}

/** Session-major discriminator rows [real_0, fake_0, real_1, fake_1, ...], so each session's head sees its own. */
function discriminatorSpec(cfg: GanConfig, S: number, s: DecoderSettings): TrainingSpec {
  const { batch, lr, weightDecay } = s;
  const { height: H, width: W } = cfg;
  const shape = (g: LayerContext['g'], dims: number[]): Value => g.initializer('shape', tensor('int64', [dims.length], dims));
  return {
    name: 'disc',
    batch,
    seed: s.seed + 1,
    threads: s.threads,
    model: (ctx) => {
      const { g } = ctx;
      const real = g.input('d_real', 'float32', [S * batch, 1, H, W]);
      const fake = g.input('d_fake', 'float32', [S * batch, 1, H, W]);
      const bySession = (v: Value): Value => g.op('Reshape', [v, shape(g, [S, batch, 1, H, W])]);
      const both = g.op('Reshape', [g.op('Concat', [bySession(real), bySession(fake)], { axis: 1 }), shape(g, [2 * S * batch, 1, H, W])]);
      return { inputs: [real, fake], output: ganDiscriminator(ctx, both, cfg, S) };
    },
    objective: (ctx, scores) => {
      const { g } = ctx;
      const labelReal = g.input('label_real', 'float32', [S * batch, 1]);
      const labelFake = g.input('label_fake', 'float32', [S * batch, 1]);
      const grouped = g.op('Reshape', [scores, shape(g, [S, 2, batch])]);
      const part = (i: number): Value =>
        g.op('Reshape', [g.op('Slice', [grouped, g.initializer('s', tensor('int64', [1], [i])), g.initializer('e', tensor('int64', [1], [i + 1])), g.initializer('a', tensor('int64', [1], [1]))]), shape(g, [S * batch, 1])]);
      const [dReal, dFake] = [part(0), part(1)];
      const loss = g.op('Mul', [g.op('Add', [lsganLoss(ctx, dReal, labelReal), lsganLoss(ctx, dFake, labelFake)]), scalar(g, 'half', 0.5)]);
      return { targets: [labelReal, labelFake], loss, metrics: { real: reduce(ctx, 'ReduceMean', dReal, [0, 1], false), fake: reduce(ctx, 'ReduceMean', dFake, [0, 1], false) } };
    },
    groups: [{ match: '', lr, weightDecay }],
    optimizer: { kind: 'adamw' },
  };
}

/**
 * The report's GAN decoder: generator step (0.1 LSGAN + 0.9 log-SSIM, core gradients clamped to
 * [-1, 1]) then discriminator step (LSGAN with label noise), AdamW. Several sessions train B-All:
 * one readin and discriminator head each, a shared core. Sessions come with their MEIs attached
 * (attachMeis) and, for a ridge-anchored GAN, their anchors.
 */
export async function ganRecipe(s: DecoderSettings, cfg: GanConfig, meis: string[], sessions: DecoderSession[], fid: FidComputer): Promise<{ recipe: Recipe; generator: TrainingSession }> {
  const S = sessions.length;
  const { height: H, width: W } = sessions[0].data;
  const lossName = s.loss ?? 'logssim';
  const inputs = sessions.map((x) => ({ neurons: x.data.neurons, mei: x.mei, anchor: x.anchor }));
  const spec: TrainingSpec = {
    name: 'gan',
    outputName: DECODER_OUTPUT,
    batch: s.batch,
    seed: s.seed,
    threads: s.threads,
    model: (ctx, b) => {
      const m = multiSessionGenerator(ctx, b as number, inputs, cfg);
      return { inputs: m.inputs, output: m.output, stepInputs: fedAnchorInputs(ctx, sessions, m.bases) };
    },
    objective: (ctx, fake) => {
      const t = ctx.g.input('target', 'float32', [S * s.batch, 1, H, W]);
      const adv = lsganLoss(ctx, ganDiscriminator(ctx, fake, cfg, S), scalar(ctx.g, 'real', 1));
      const recon = LOSSES[lossName](ctx, fake, t);
      const loss = ctx.g.op('Add', [ctx.g.op('Mul', [adv, scalar(ctx.g, 'w_adv', 0.1)]), ctx.g.op('Mul', [recon, scalar(ctx.g, 'w_recon', 0.9)])]);
      return { targets: [t], loss, metrics: { adversarial: adv, reconstruction: recon }, outputs: { fake } };
    },
    groups: [
      { match: 'disc/', lr: 0, external: true },
      { match: 'core/', lr: s.lr, weightDecay: s.weightDecay, clamp: 1 },
      { match: '', lr: s.lr, weightDecay: s.weightDecay },
    ],
    optimizer: { kind: 'adamw' },
  };
  /** Session k's decoder alone (its readin + the shared core): what its bundle holds. */
  const sessionSpec = (k: number): TrainingSpec => ({
    ...spec,
    model: (ctx, b) => {
      const m = ganGenerator(ctx, b, cfg, inputs[k], { index: k, count: S });
      return { inputs: [m.input], output: m.output };
    },
  });
  const G = await TrainingSession.create(spec);
  const D = await TrainingSession.create(discriminatorSpec(cfg, S, s));
  const batch = await DecoderBatch.create(sessions, s.batch, G.stepInputNames, s.pairs, s.responseNoise);
  const labels = { real: new Float32Array(S * s.batch), fake: new Float32Array(S * s.batch) };
  const config = {
    kind: 'gan',
    profile: s.profile,
    architecture: cfg,
    meis: meis.length ? meis : undefined,
    meiNeurons: sessions[0].mei?.neuronIndex.length,
    sessions: S > 1 ? sessions.map((x) => x.ds.dir) : undefined,
    loss: lossName,
    ...sharedConfig(s),
    data: sessions[0].ds.dir,
    parameters: G.parameterCount,
    discriminatorParameters: D.parameterCount,
  };
  s.log(`gan (${s.profile}${sessions[0].anchor ? ', ridge-anchored' : ''}): ${G.parameterCount.toLocaleString()} parameters + discriminator ${D.parameterCount.toLocaleString()}, ${sessions.map((x) => x.data.neurons).join(' + ')} neurons, batch ${s.batch}${S > 1 ? ` per session (${S} sessions)` : ''}`);
  const recipe = decoderRecipe('gan', s, sessions, fid, config, {
    generator: G,
    graphs: () => sessions.map((_, k) => buildEvalGraph(sessionSpec(k), G.modelTensors(), false).graph),
    step: async (rows, rng: Rng) => {
      const r = await G.trainStep(await batch.fill(rows, rng), D.currentTensors(G.externalParameterNames));
      for (let b = 0; b < S * s.batch; b++) {
        labels.real[b] = rng.uniform(0.95, 1);
        labels.fake[b] = rng.uniform(0, 0.05);
      }
      await D.trainStep(
        { d_real: tensor('float32', [S * s.batch, 1, H, W], batch.images), label_real: tensor('float32', [S * s.batch, 1], labels.real), label_fake: tensor('float32', [S * s.batch, 1], labels.fake) },
        { d_fake: r.outputs.fake },
      );
      return { loss: r.loss, ms: G.lastStepMs + D.lastStepMs };
    },
    checkpointed: { generator: G, discriminator: D },
  });
  return { recipe, generator: G };
}

/** Cortical (x, y) of the chosen neurons, scaled to [-1, 1]. */
function normalisedCoordinates(coords: Float64Array, idx: number[]): Float32Array {
  const out = new Float32Array(idx.length * 2);
  for (const axis of [0, 1]) {
    const vals = idx.map((i) => coords[i * 3 + axis]);
    const lo = Math.min(...vals);
    const hi = Math.max(...vals);
    vals.forEach((v, k) => (out[k * 2 + axis] = hi > lo ? ((v - lo) / (hi - lo)) * 2 - 1 : 0));
  }
  return out;
}
