import { statSync } from 'node:fs';
import { resolve } from 'node:path';
import { ccError } from '../common/errors.js';
import { registerNwbOpener } from './dataset-source.js';
import { readNwbRecording, type NwbReadOptions } from './nwb-read.js';
import { checkTrialIndex, tierIndices, type SessionLayout, type StatisticSet, type Trial } from './sensorium.js';
import { STIMULUS_SHAPE } from './template-geometry.js';
import { cutTrials, type RecordedResponseWindow, type TrialOptions } from './trials.js';

export interface NwbDatasetOptions extends NwbReadOptions, TrialOptions {}

/**
 * An NWB file seen as a session of trials, with the same members as a SENSORIUM folder, so every
 * command reading datasets reads it unchanged. Trials are cut once, on open, and held in memory:
 * responses (trials x ROIs) and one image per template at the SENSORIUM geometry.
 */
export class NwbDataset implements SessionLayout {
  readonly tiers: string[];
  readonly imageIds: number[];
  readonly unitIds: number[];
  readonly coordinates = undefined;
  readonly imageShape: [number, number] = [STIMULUS_SHAPE[0], STIMULUS_SHAPE[1]];
  readonly neurons: number;
  readonly hasBehavior = false;
  readonly hasPupil = false;
  readonly responseWindow: RecordedResponseWindow;
  /** What was read and how trials were made: series, stimulus and template paths, rules, dropped trials. */
  readonly source: { seriesPath: string; stimulusPath: string; templatesPath: string; frames: number; rateHz: number; baselineFrames: number; dropped: number; windowRule: string; tierRule: string };

  private constructor(
    readonly dir: string,
    private readonly responses: Float32Array,
    private readonly images: Float32Array[],
    private readonly templateOf: number[],
    init: { tiers: string[]; imageIds: number[]; unitIds: number[]; window: RecordedResponseWindow; source: NwbDataset['source'] },
  ) {
    this.tiers = init.tiers;
    this.imageIds = init.imageIds;
    this.unitIds = init.unitIds;
    this.neurons = init.unitIds.length;
    this.responseWindow = init.window;
    this.source = init.source;
  }

  static open(file: string, o: NwbDatasetOptions = {}): NwbDataset {
    const rec = readNwbRecording(file, { ...o, templateShape: STIMULUS_SHAPE });
    const cut = cutTrials(rec, o);
    // The traces are not needed once the trials are cut: let them go before anything else is made.
    const frames = rec.frames;
    rec.traces = new Float32Array(0);
    if (!cut.count) throw ccError('CC_ERR_NWB_SHAPE', file, `no presentation of ${rec.stimulusPath} has its response window (lag ${cut.window.lagFrames}, ${cut.window.lengthFrames} frames) inside the ${frames} frames of ${rec.seriesPath}`);
    const images = rec.templates.map((t) => t.image);
    return new NwbDataset(file, cut.responses, images, cut.templates, {
      tiers: cut.tiers,
      imageIds: cut.templates.map((t) => rec.templates[t].imageId),
      unitIds: rec.unitIds,
      window: cut.window,
      source: {
        seriesPath: rec.seriesPath,
        stimulusPath: rec.stimulusPath,
        templatesPath: rec.templatesPath,
        frames,
        rateHz: rec.rate,
        baselineFrames: cut.baselineFrames,
        dropped: cut.dropped,
        windowRule: cut.windowRule,
        tierRule: cut.tierRule,
      },
    });
  }

  get trialCount(): number {
    return this.tiers.length;
  }

  indices(tier: string): number[] {
    return tierIndices(this.tiers, tier);
  }

  trial(i: number): Trial {
    checkTrialIndex(this.dir, i, this.trialCount);
    const n = this.neurons;
    return { index: i, tier: this.tiers[i], imageId: this.imageIds[i], image: this.images[this.templateOf[i]], responses: this.responses.subarray(i * n, (i + 1) * n) };
  }

  statistics(_key: string): StatisticSet | undefined {
    return undefined;
  }

  simulation(): unknown {
    return undefined;
  }
}

/** The last few files opened, so commands that open their dataset twice (train, then evaluate) cut trials once. */
const cache = new Map<string, NwbDataset>();

export function openNwbDataset(file: string, o: NwbDatasetOptions = {}): NwbDataset {
  const st = statSync(file, { throwIfNoEntry: false });
  const key = JSON.stringify([resolve(file), st?.mtimeMs, st?.size, o]);
  const hit = cache.get(key);
  if (hit) return hit;
  const ds = NwbDataset.open(file, o);
  cache.set(key, ds);
  while (cache.size > 2) cache.delete(cache.keys().next().value!);
  return ds;
}

registerNwbOpener(openNwbDataset);
