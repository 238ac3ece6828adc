import { join } from 'node:path';
import { ccError } from '../../common/errors.js';
import type { Manifest, ResponseTransform } from '../../models/bundle.js';
import { FidComputer } from '../eval/metrics/fid.js';
import type { TrainingSession } from '../engine/trainer.js';
import { runTraining, type RunRecord } from '../run/loop.js';
import { refuseChangedSettings } from '../run/run-folder.js';
import { cnnRecipe } from './cnn.js';
import { EncoderPairs } from './encoder-pairs.js';
import { attachMeis, ganConfig, ganRecipe } from './gan.js';
import { attachRidgeAnchors, openSessions, sharedConfig, testBundles } from './sessions.js';
import type { DecoderLoss, DecoderSettings } from './settings.js';

export type DecoderKindTrained = 'cnn' | 'gan';

export interface TrainDecoderOptions {
  kind: DecoderKindTrained;
  /** Dataset folder; the GAN takes several (B-All: one readin and discriminator head per session, shared core). */
  data: string | string[];
  /** Bundle folder (the best checkpoint by validation FID, exported); one sub-folder per session for B-All. */
  out: string;
  /** Run folder: config, per-epoch metrics, curves, grids, checkpoint (default <out>/run). */
  run?: string;
  /** 'appendix' (the report's appendix sizes) exists for the CNN only, 'realtime' for the GAN only. */
  profile?: 'small' | 'paper' | 'appendix' | 'realtime';
  epochs?: number;
  batch?: number;
  lr?: number;
  weightDecay?: number;
  /** Validate every this many steps (default: once per epoch). */
  validateEvery?: number;
  /** Stop after this many steps in all (time-boxed runs, tests). */
  maxSteps?: number;
  /**
   * Wall-clock budget of this invocation, seconds: stop before the step that would start after it is
   * spent, validate what was trained, keep the best bundle, and write why it stopped to stop.json.
   */
  budgetSeconds?: number;
  resume?: boolean;
  maxTrain?: number;
  /**
   * Train on these neurons only (dataset column indices, one session): the bundle's unit ids list just
   * them, so it decodes frames of that many responses (the experiments' neuron-scaling curve).
   */
  neurons?: readonly number[];
  seed?: number;
  threads?: number;
  /** GAN: MEI folder(s) (cortexcast meis; one per session), generator objective, readin, ablations. */
  meis?: string | string[];
  loss?: DecoderLoss;
  /** 'grid': the grid network alone on the MEI folder's neurons (MEIs not used). */
  readin?: 'mei' | 'grid' | 'fc';
  /** GAN: output channels of the readin (the profile's when absent; the report's Figure 3 varies it). */
  readinChannels?: number;
  /** "T" ablation: log10(clamp(r, 1e-3)) on std-scaled responses. */
  transform?: boolean;
  /** "C" ablation: neuron coordinates appended to the context input. */
  coordinates?: boolean;
  /**
   * 'cortexcast' (default): the recipe measured in docs/bench (ridge anchor; the CNN is the ridge
   * refiner with the contrast read-out, MSE + log-SSIM, selected by validation SSIML). 'report': the report's decoders and settings, no anchor.
   */
  recipe?: 'cortexcast' | 'report';
  /**
   * 'ridge': fit the closed-form ridge on the train tier (alpha by validation MSE) and learn a
   * correction on top of it, so step 0 is the ridge decoder; 'none': the decoder alone. Default:
   * the recipe's ('ridge' for cortexcast, 'none' for report).
   */
  anchor?: 'ridge' | 'none';
  /**
   * Folds of the anchor's out-of-fold train estimates; 0 trains on the in-sample ridge image. Default
   * 5 for the refiner CNN (better validation MSE on the default preset, -2.6%; +1.2% on the second
   * population), 0 for the GAN (out-of-fold made its validation worse than ridge's).
   */
  anchorFolds?: number;
  /** cortexcast CNN: 2 (U-Net, default) or 0 (full-resolution convolutions only). */
  refinerLevels?: 0 | 2;
  /**
   * cortexcast CNN: give the refiner a second ridge read-out, of the stimulus' local contrast
   * (training/ridge/contrast.ts), beside the ridge image. Default on for the refiner (docs/bench).
   */
  anchorContrast?: boolean;
  /** The contrast read-out's grid: the image's divided by this (default CONTRAST_DOWNSAMPLE). */
  contrastDownsample?: number;
  /**
   * Encoder bundle (cortexcast train encoder, same session) whose predictions label new images made
   * from train-tier stimuli: `pairsFraction` of every batch (default 0.5) is such pairs.
   */
  encoderPairs?: string;
  pairsFraction?: number;
  /** Noise augmentation of the train responses (DecoderSettings.responseNoise); default 0 (off). */
  responseNoise?: number;
  /** Validation metric that picks the exported checkpoint (default FID, as the report; SSIML for cortexcast's CNN). */
  select?: 'fid' | 'ssiml' | 'mse';
  /** Stop after this many validations without a better selection metric. */
  patience?: number;
  quiet?: boolean;
  log?: (s: string) => void;
}

export type EpochRecord = RunRecord;

/**
 * The contrast read-out's default grid divisor: 9x16 for 36x64 images. It reads 1/16 of the full-size
 * read-out's weights per frame (the refiner's MatMul 53% of the full-size one's), and validation did
 * not tell the two apart: SSIML 0.2934 vs 0.2931 (second population) and 0.2678 vs 0.2675 (default
 * preset), MSE equal to 4 digits, same seed and steps (docs/bench/ablation-cnn-contrast-grid.txt).
 */
export const CONTRAST_DOWNSAMPLE = 4;

export interface TrainDecoderResult {
  /** The (first) session's bundle manifest; `manifests` has every session's. */
  manifest: Manifest;
  manifests: Manifest[];
  bundles: string[];
  history: EpochRecord[];
  best: EpochRecord;
  seconds: number;
  steps: number;
  run: string;
  /** The generator's training session, at its last step (not necessarily the exported best). */
  generator: TrainingSession;
}

/**
 * Train the report's CNN or GAN decoder end to end (recipes in cnn.ts and gan.ts):
 * AdamW 3e-4 / wd 3e-2, batch 16, validation (SSIM, MSE, PixCorr, FID-64) every epoch or every
 * --validate-every steps; the best by the selection metric is exported as the bundle and scored on
 * the test tier; the run folder keeps everything needed to see and resume the run.
 */
export async function trainDecoder(o: TrainDecoderOptions): Promise<TrainDecoderResult> {
  const t0 = Date.now();
  const log = o.log ?? ((s: string) => process.stderr.write(s + '\n'));
  const run = o.run ?? join(o.out, 'run');
  const dirs = Array.isArray(o.data) ? o.data : [o.data];
  if (o.kind === 'cnn' && o.profile === 'realtime') throw ccError('CC_ERR_OPTION', "profile 'realtime' is the GAN's; the CNN's small profile is its real-time one");
  // Coordinates are looked up by dataset column, and a subset renumbers the columns.
  if (o.neurons && (dirs.length > 1 || o.coordinates)) throw ccError('CC_ERR_OPTION', 'a neuron subset is for one session without the coordinates ablation');
  if (o.readinChannels !== undefined && !(Number.isInteger(o.readinChannels) && o.readinChannels > 0)) throw ccError('CC_ERR_OPTION', `readin channels ${o.readinChannels} must be a positive integer`);
  const transform: ResponseTransform = o.transform ? 'log10clamp' : 'none';
  const recipeName = o.recipe ?? 'cortexcast';
  // The ridge refiner is a small network on a strong start: at the report's 3e-4 its validation MSE
  // was worse than ridge's within 100 steps on the default preset; at 5e-5 it improved, then overfit
  // the train photos within an epoch - so it validates often and stops early (docs/bench).
  const refiner = recipeName === 'cortexcast' && o.kind === 'cnn';
  const settings: DecoderSettings = {
    profile: o.profile ?? 'small',
    batch: o.batch ?? 16,
    lr: o.lr ?? (refiner ? 5e-5 : 3e-4),
    weightDecay: o.weightDecay ?? 3e-2,
    seed: o.seed ?? 1,
    epochs: o.epochs ?? 200,
    threads: o.threads,
    // The refiner's objective and selection ask for SSIM and MSE together: MSE alone tied ridge's SSIML,
    // log-SSIM alone traded MSE away (docs/bench/ablation-cnn-objective-contrast.txt).
    loss: o.loss ?? (refiner ? 'mse+logssim' : undefined),
    transform,
    recipe: recipeName,
    anchor: o.anchor ?? (recipeName === 'cortexcast' ? 'ridge' : 'none'),
    anchorFolds: o.anchorFolds ?? (refiner ? 5 : 0),
    anchorContrast: o.anchorContrast ?? refiner,
    contrastDownsample: o.contrastDownsample ?? CONTRAST_DOWNSAMPLE,
    refinerLevels: o.refinerLevels,
    responseNoise: o.responseNoise ?? 0,
    selection: { metric: o.select ?? (refiner ? 'ssiml' : 'fid'), mode: 'min' },
    log,
  };
  if (!(Number.isFinite(settings.responseNoise) && settings.responseNoise >= 0 && settings.responseNoise <= 10)) throw ccError('CC_ERR_OPTION', `response noise ${settings.responseNoise} must be between 0 and 10 (standard deviations of a neuron's response)`);
  if (o.contrastDownsample !== undefined && !settings.anchorContrast) throw ccError('CC_ERR_OPTION', '--contrast-downsample is a setting of the contrast read-out, which is off (--no-anchor-contrast or not the refiner)');
  if (!(Number.isInteger(settings.contrastDownsample) && settings.contrastDownsample >= 1)) throw ccError('CC_ERR_OPTION', `contrast downsample ${settings.contrastDownsample} must be a whole number >= 1`);
  if (settings.anchorContrast && !refiner) throw ccError('CC_ERR_OPTION', "the contrast read-out is an input of cortexcast's CNN (the ridge refiner): not of the GAN or --recipe report");
  // The run's own settings are checked before the datasets load and the anchors are fitted (minutes).
  if (o.resume) refuseChangedSettings(run, { kind: o.kind, profile: settings.profile, ...(settings.loss && { loss: settings.loss }), ...sharedConfig(settings) });
  const sessions = openSessions(dirs, o.out, { maxTrain: o.maxTrain, transform, neurons: o.neurons, quiet: o.quiet });
  const meis = o.meis === undefined ? [] : Array.isArray(o.meis) ? o.meis : [o.meis];
  const gan = o.kind === 'gan' ? { ...ganConfig(settings, { readin: o.readin, coordinates: o.coordinates }), ...(o.readinChannels !== undefined && { readinChannels: o.readinChannels }) } : undefined;
  if (gan) attachMeis(gan, sessions, meis);
  if (settings.anchor === 'ridge') await attachRidgeAnchors(sessions, settings.anchorFolds, o.quiet ? undefined : log, { contrast: settings.anchorContrast, contrastDownsample: settings.contrastDownsample });
  if (o.encoderPairs) {
    if (sessions.length > 1 || transform !== 'none') throw ccError('CC_ERR_OPTION', 'encoder pairs are made for one session without the response transform');
    const fraction = o.pairsFraction ?? 0.5;
    if (!(fraction > 0 && fraction < 1)) throw ccError('CC_ERR_OPTION', `pairs fraction ${fraction} must be between 0 and 1 (exclusive)`);
    settings.pairs = { source: await EncoderPairs.create(o.encoderPairs, sessions[0].data, o.threads), fraction };
  }
  const fid = await FidComputer.create(64);
  const { recipe, generator } = gan ? await ganRecipe(settings, gan, meis, sessions, fid) : await cnnRecipe(settings, sessions, fid);
  log(`${o.kind}: run folder ${run}`);
  const { history, best } = await runTraining(recipe, {
    run,
    epochs: settings.epochs,
    maxSteps: o.maxSteps,
    budgetSeconds: o.budgetSeconds,
    validateEvery: o.validateEvery ?? (refiner ? 50 : undefined),
    patience: o.patience ?? (refiner ? 6 : undefined),
    resume: o.resume,
    shuffleSeed: (startEpoch) => settings.seed * 7 + 3 + startEpoch,
    startedAt: t0,
    quiet: o.quiet,
    log,
  });
  const manifests = await testBundles(o.kind, sessions, best, log, t0);
  return { manifest: manifests[0], manifests, bundles: sessions.map((x) => x.bundle), history, best, seconds: (Date.now() - t0) / 1000, steps: generator.step, run, generator };
}
