import type { ResponseTransform } from '../../models/bundle.js';
import type { Recipe } from '../run/loop.js';
import type { EncoderPairs } from './encoder-pairs.js';

/** Training objectives of the CNN (and the GAN's reconstruction term). */
export type DecoderLoss = 'logssim' | 'mse' | 'mae' | 'mse+logssim';

/** What the CNN and GAN recipes share, resolved from TrainDecoderOptions (defaults applied). */
export interface DecoderSettings {
  profile: 'small' | 'paper' | 'appendix' | 'realtime';
  batch: number;
  lr: number;
  weightDecay: number;
  seed: number;
  epochs: number;
  threads?: number;
  loss?: DecoderLoss;
  transform: ResponseTransform;
  /** 'cortexcast': the measured defaults (ridge anchor with out-of-fold estimates; the CNN is the ridge refiner); 'report': the report's decoders. */
  recipe: 'cortexcast' | 'report';
  anchor: 'ridge' | 'none';
  /** Folds of the anchor's out-of-fold train estimates (0: training sees the in-sample ridge image). */
  anchorFolds: number;
  /** The refiner also sees a second ridge's estimate of the local contrast (training/ridge/contrast.ts). */
  anchorContrast: boolean;
  /** The contrast read-out's grid is the image's divided by this (1: full size). */
  contrastDownsample: number;
  /** The refiner CNN's depth (RefinerConfig.levels); its profile's when absent. */
  refinerLevels?: 0 | 2;
  /** Encoder-made training pairs mixed into each batch (MEIcoder's low-data trick). */
  pairs?: { source: EncoderPairs; fraction: number };
  /**
   * Noise augmentation: Gaussian noise of this standard deviation (the responses are std-scaled, so
   * in units of each neuron's std) added to every train row's responses at every step; where the
   * training feeds ridge images, they move by the ridge read-out of the same noise. 0: off.
   */
  responseNoise: number;
  selection: Recipe['selection'];
  log: (s: string) => void;
}

export const DECODER_CURVES: Recipe['curves'] = [
  { key: 'ssim', label: 'SSIM' },
  { key: 'mse', label: 'MSE' },
  { key: 'pixcorr', label: 'PixCorr' },
  { key: 'fid', label: 'FID' },
];
