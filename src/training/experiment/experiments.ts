import { ccError } from '../../common/errors.js';

/**
 * The experiments of the report ("Investigation of Methods for Decoding Brain Activity", Kotevski,
 * Sobotka and Vanoušek; section V, Figures 1-4 and Table I's B-All row):
 * what each one sweeps, over which values by default, and what a swept value changes in a run.
 */
export const EXPERIMENT_NAMES = ['data-scaling', 'neuron-scaling', 'channels', 'readin', 'loss', 'sessions'] as const;
export type ExperimentName = (typeof EXPERIMENT_NAMES)[number];

export const DECODER_CHOICES = ['gan', 'cnn', 'ridge'] as const;
export type DecoderChoice = (typeof DECODER_CHOICES)[number];

export const READIN_VARIANTS = ['base', 'C', 'T', 'C+T'] as const;
export const LOSSES = ['logssim', 'mse', 'mae'] as const;
export type LossName = (typeof LOSSES)[number];

export type SweptValue = number | string;

/** What one swept value sets in its runs (everything else is the plan's). */
export interface RunSettings {
  /** Train on the first n train trials. */
  maxTrain?: number;
  /** Train on the first n neurons of the plan's random neuron order (the same subset for every seed). */
  neurons?: number;
  readinChannels?: number;
  /** The report's "T" ablation: log10(clamp(r, 1e-3)). */
  transform?: boolean;
  /** The report's "C" ablation: neuron coordinates into the MEI readin's context MLP. */
  coordinates?: boolean;
  loss?: LossName;
  /** Pool the first n sessions of the plan (1: the evaluated mouse alone; more: B-All). */
  sessions?: number;
}

/** What the dataset holds, for the default grids. */
export interface DataExtent {
  trainTrials: number;
  neurons: number;
}

export interface ExperimentDefinition {
  /** Where the report shows it. */
  figure: string;
  /** The swept quantity, for the figure's x axis and the CSV. */
  axis: string;
  /** 'log': numbers spread over orders of magnitude; 'category': named variants, evenly spaced. */
  scale: 'log' | 'category';
  /** Decoders the swept setting exists for; the first one the report used. */
  decoders: readonly DecoderChoice[];
  defaultGrid(d: DataExtent): SweptValue[];
  /** One --grid entry -> a value (throws on a value the experiment cannot run). */
  parse(v: string, d: DataExtent): SweptValue;
  settings(v: SweptValue): RunSettings;
}

/** The report's powers-of-roughly-two ladder, cut to what the data has, ending with all of it. */
const ladder = (steps: number[], max: number): number[] => [...steps.filter((v) => v < max), max];

const count = (what: string, max?: number) => (v: string): number => {
  const n = Number(v);
  if (!Number.isInteger(n) || n <= 0) throw ccError('CC_ERR_OPTION', `--grid: ${what} '${v}' is not a positive integer`);
  if (max !== undefined && n > max) throw ccError('CC_ERR_OPTION', `--grid: ${n} ${what} asked for, the dataset has ${max}`);
  return n;
};

const oneOf = (what: string, names: readonly string[]) => (v: string): string => {
  if (!names.includes(v)) throw ccError('CC_ERR_OPTION', `--grid: ${what} '${v}' (use ${names.join(', ')})`);
  return v;
};

export const EXPERIMENTS: Record<ExperimentName, ExperimentDefinition> = {
  'data-scaling': {
    figure: 'Figure 1 (left), Figure 2 (top)',
    axis: 'training images',
    scale: 'log',
    decoders: DECODER_CHOICES,
    // MEIcoder's data-scaling curve used train subsets of 100..4,500 images.
    defaultGrid: (d) => ladder([100, 250, 500, 1000, 2000, 4500], d.trainTrials),
    parse: (v, d) => count('training images', d.trainTrials)(v),
    settings: (v) => ({ maxTrain: Number(v) }),
  },
  'neuron-scaling': {
    figure: 'Figure 1 (right), Figure 2 (bottom)',
    axis: 'neurons',
    scale: 'log',
    decoders: DECODER_CHOICES,
    defaultGrid: (d) => ladder([100, 250, 500, 1000, 2000, 4000, 8000], d.neurons),
    parse: (v, d) => count('neurons', d.neurons)(v),
    settings: (v) => ({ neurons: Number(v) }),
  },
  channels: {
    figure: 'Figure 3',
    axis: 'readin channels',
    scale: 'log',
    decoders: ['gan'],
    // Around the report's optimum (~256) and the original's 480, up to past the 624 where noise appeared.
    defaultGrid: () => [32, 64, 128, 256, 480, 624, 1024],
    parse: (v) => count('readin channels')(v),
    settings: (v) => ({ readinChannels: Number(v) }),
  },
  readin: {
    figure: 'Figure 4 (left)',
    axis: 'readin (C: neuron coordinates, T: log response transform)',
    scale: 'category',
    decoders: ['gan'],
    defaultGrid: () => [...READIN_VARIANTS],
    parse: oneOf('readin variant', READIN_VARIANTS),
    settings: (v) => ({ coordinates: String(v).includes('C'), transform: String(v).includes('T') }),
  },
  loss: {
    figure: 'Figure 4 (right)',
    axis: 'training objective',
    scale: 'category',
    decoders: ['gan', 'cnn'],
    defaultGrid: () => [...LOSSES],
    parse: oneOf('loss', LOSSES),
    settings: (v) => ({ loss: v as LossName }),
  },
  sessions: {
    figure: 'Table I, GAN (B-6) vs GAN (B-All)',
    axis: 'mice pooled (first: the evaluated one)',
    scale: 'category',
    decoders: ['gan'],
    defaultGrid: () => [1, 3],
    parse: (v) => count('mice pooled')(v),
    settings: (v) => ({ sessions: Number(v) }),
  },
};

/** A swept value as it appears in run ids and folder names ('C+T' -> 'c-t'). */
export const valueSlug = (v: SweptValue): string => String(v).toLowerCase().replace(/[^a-z0-9]+/g, '-');

/** The short name of the swept setting in run ids: train-500-seed1, neurons-250-seed2, ... */
export const SWEPT_KEY: Record<ExperimentName, string> = {
  'data-scaling': 'train',
  'neuron-scaling': 'neurons',
  channels: 'channels',
  readin: 'readin',
  loss: 'loss',
  sessions: 'mice',
};
