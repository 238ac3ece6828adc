import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { ccError } from '../common/errors.js';
import { npyNumbers, readNpy, readNpyHeader, type NpyArray } from '../common/npy.js';
import type { RecordedResponseWindow } from './trials.js';

export type Tier = 'train' | 'validation' | 'test' | 'final_test';

export interface Trial {
  index: number;
  tier: string;
  imageId: number;
  /** Grey levels (0..255 as stored), row-major [height, width]. */
  image: Float32Array;
  responses: Float32Array;
  behavior?: Float32Array;
  pupilCenter?: Float32Array;
}

export interface StatisticSet {
  mean: Float64Array;
  std: Float64Array;
  median?: Float64Array;
  min?: Float64Array;
  max?: Float64Array;
}

/** What opening a session folder establishes about it. */
export interface SessionLayout {
  tiers: string[];
  imageIds: number[];
  unitIds: number[];
  coordinates?: Float64Array;
  imageShape: [number, number];
  neurons: number;
  hasBehavior: boolean;
  hasPupil: boolean;
  /** Set where the trials were cut from continuous traces (`cortexcast import nwb` records it in meta/recording/response_window.json). */
  responseWindow?: RecordedResponseWindow;
}

/**
 * A SENSORIUM 2022 session folder (see README "Data formats"). Opening validates the layout and every
 * trial file's header against the first one, so a missing, truncated or mis-shaped file is reported up
 * front with its path; trial data is then read one trial at a time.
 */
export class SensoriumDataset implements SessionLayout {
  readonly tiers: string[];
  readonly imageIds: number[];
  readonly unitIds: number[];
  readonly coordinates?: Float64Array;
  readonly imageShape: [number, number];
  readonly neurons: number;
  readonly hasBehavior: boolean;
  readonly hasPupil: boolean;
  readonly responseWindow?: RecordedResponseWindow;

  private constructor(
    readonly dir: string,
    layout: SessionLayout,
  ) {
    ({
      tiers: this.tiers,
      imageIds: this.imageIds,
      unitIds: this.unitIds,
      coordinates: this.coordinates,
      imageShape: this.imageShape,
      neurons: this.neurons,
      hasBehavior: this.hasBehavior,
      hasPupil: this.hasPupil,
      responseWindow: this.responseWindow,
    } = layout);
  }

  get trialCount(): number {
    return this.tiers.length;
  }

  static open(dir: string): SensoriumDataset {
    const need = (p: string, what: string): string => {
      const full = join(dir, p);
      if (!existsSync(full)) throw ccError('CC_ERR_DATASET_MISSING', dir, `${what} missing (expected ${p})`);
      return full;
    };
    if (!existsSync(dir) || !statSync(dir).isDirectory()) throw ccError('CC_ERR_DATASET_MISSING', dir, 'not a folder');
    need('data/images', 'image folder');
    need('data/responses', 'response folder');
    const tiersArr = readNpy(need('meta/trials/tiers.npy', 'trial tiers'));
    if (tiersArr.dtype !== 'unicode') throw ccError('CC_ERR_DATASET_SHAPE', dir, `meta/trials/tiers.npy must hold strings, has ${tiersArr.dtype}`);
    const tiers = tiersArr.data as string[];
    const imageIds = Array.from(npyNumbers(readNpy(need('meta/trials/frame_image_id.npy', 'image ids')), 'frame_image_id.npy'));
    if (imageIds.length !== tiers.length) throw ccError('CC_ERR_DATASET_SHAPE', dir, `${tiers.length} tiers but ${imageIds.length} image ids`);
    const unitIds = Array.from(npyNumbers(readNpy(need('meta/neurons/unit_ids.npy', 'unit ids')), 'unit_ids.npy'));
    const coordPath = join(dir, 'meta/neurons/cell_motor_coordinates.npy');
    const coordinates = existsSync(coordPath) ? npyNumbers(readNpy(coordPath)) : undefined;

    // Every trial must have an image and a response file of one consistent shape.
    const n = tiers.length;
    const first = readNpyHeader(trialPath(dir, 'images', 0));
    const imageShape = first.shape.slice(-2) as [number, number];
    if (first.shape.length < 2 || first.shape.slice(0, -2).some((d) => d !== 1))
      throw ccError('CC_ERR_DATASET_SHAPE', dir, `images must be (1,H,W) or (H,W), data/images/0.npy is (${first.shape})`);
    const neurons = unitIds.length;
    const hasBehavior = existsSync(join(dir, 'data/behavior'));
    const hasPupil = existsSync(join(dir, 'data/pupil_center'));
    const imageFiles = new Set(readdirSync(join(dir, 'data/images')));
    const responseFiles = new Set(readdirSync(join(dir, 'data/responses')));
    for (let i = 0; i < n; i++) {
      if (!imageFiles.has(`${i}.npy`)) throw ccError('CC_ERR_DATASET_MISSING', dir, `trial ${i} has no image file data/images/${i}.npy`);
      if (!responseFiles.has(`${i}.npy`)) throw ccError('CC_ERR_DATASET_MISSING', dir, `trial ${i} has no response file data/responses/${i}.npy`);
    }
    if (coordinates && coordinates.length !== neurons * 3)
      throw ccError('CC_ERR_DATASET_SHAPE', dir, `cell_motor_coordinates has ${coordinates.length / 3} rows, unit_ids ${neurons}`);
    const r0 = readNpyHeader(trialPath(dir, 'responses', 0));
    if (r0.shape.reduce((a, b) => a * b, 1) !== neurons)
      throw ccError('CC_ERR_DATASET_SHAPE', dir, `data/responses/0.npy has ${r0.shape} values, meta/neurons/unit_ids.npy lists ${neurons} neurons`);
    const windowPath = join(dir, RESPONSE_WINDOW_FILE);
    const responseWindow = existsSync(windowPath) ? (JSON.parse(readFileSync(windowPath, 'utf8')) as RecordedResponseWindow) : undefined;
    return new SensoriumDataset(dir, { tiers, imageIds, unitIds, coordinates, imageShape, neurons, hasBehavior, hasPupil, responseWindow });
  }

  /** Trial indices of one tier, in session order. */
  indices(tier: string): number[] {
    return tierIndices(this.tiers, tier);
  }

  /** Read one trial; shapes are checked against the session's. */
  trial(i: number): Trial {
    checkTrialIndex(this.dir, i, this.trialCount);
    const [h, w] = this.imageShape;
    const img = readNpy(trialPath(this.dir, 'images', i));
    if (img.shape.reduce((a, b) => a * b, 1) !== h * w)
      throw ccError('CC_ERR_DATASET_SHAPE', this.dir, `data/images/${i}.npy is (${img.shape}), the session's images are ${h}x${w}`);
    const resp = readNpy(trialPath(this.dir, 'responses', i));
    if (resp.shape.reduce((a, b) => a * b, 1) !== this.neurons)
      throw ccError('CC_ERR_DATASET_SHAPE', this.dir, `data/responses/${i}.npy has ${resp.shape} values, the session has ${this.neurons} neurons`);
    return {
      index: i,
      tier: this.tiers[i],
      imageId: this.imageIds[i],
      image: asFloat32(img),
      responses: asFloat32(resp),
      behavior: this.hasBehavior ? asFloat32(readNpy(trialPath(this.dir, 'behavior', i))) : undefined,
      pupilCenter: this.hasPupil ? asFloat32(readNpy(trialPath(this.dir, 'pupil_center', i))) : undefined,
    };
  }

  /** Shipped statistics for a key (images, responses, behavior, pupil_center), if present. */
  statistics(key: string): StatisticSet | undefined {
    const d = join(this.dir, 'meta/statistics', key, 'all');
    if (!existsSync(join(d, 'mean.npy'))) return undefined;
    const load = (k: string): Float64Array | undefined => (existsSync(join(d, `${k}.npy`)) ? npyNumbers(readNpy(join(d, `${k}.npy`))) : undefined);
    return { mean: load('mean')!, std: load('std') ?? new Float64Array(), median: load('median'), min: load('min'), max: load('max') };
  }

  /** The simulator's description where the session was made by `cortexcast synth`. */
  simulation(): unknown {
    const p = join(this.dir, 'meta/simulation/params.json');
    return existsSync(p) ? JSON.parse(readFileSync(p, 'utf8')) : undefined;
  }
}

/** Where a session whose trials were cut from continuous traces records the window that cut them. */
export const RESPONSE_WINDOW_FILE = 'meta/recording/response_window.json';

const trialPath = (dir: string, kind: string, i: number): string => join(dir, 'data', kind, `${i}.npy`);

function asFloat32(a: NpyArray): Float32Array {
  if (a.data instanceof Float32Array) return a.data;
  return Float32Array.from(npyNumbers(a));
}

/**
 * Output folder names for several sessions trained together (one bundle each): each dataset folder's
 * own name, or session<k> where those names repeat.
 */
/** Trial indices of one tier, in session order (any dataset source). */
export function tierIndices(tiers: readonly string[], tier: string): number[] {
  const out: number[] = [];
  tiers.forEach((t, i) => t === tier && out.push(i));
  return out;
}

/** A trial index a dataset of `count` trials can read, else CC_ERR_DATASET_MISSING naming `dir`. */
export function checkTrialIndex(dir: string, i: number, count: number): void {
  if (!Number.isInteger(i) || i < 0 || i >= count) throw ccError('CC_ERR_DATASET_MISSING', dir, `trial ${i} is out of range 0..${count - 1}`);
}

export function sessionNames(dirs: readonly string[]): string[] {
  const names = dirs.map((d) => basename(resolve(d)));
  return new Set(names).size === names.length ? names : names.map((_, k) => `session${k}`);
}
