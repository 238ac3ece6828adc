import { basename } from 'node:path';
import { DEFAULT_PREPROCESS, prepareDataset, type PreparedData } from '../../datasets/preprocess.js';
import { SensoriumDataset } from '../../datasets/sensorium.js';
import { ccError } from '../../common/errors.js';
import { fitRidge } from '../ridge/ridge.js';
import { trainTransferRefiner, type RefinerAnimal, type TransferRefiner } from './refiner.js';

/**
 * Stimulus group of every train trial: the source photo of a cortexcast synth crop (folds then leave
 * whole photos out, as the CNN's anchor does), none for other datasets (folds by trial).
 */
function photoGroups(ds: SensoriumDataset, data: PreparedData): number[] | undefined {
  const sim = ds.simulation() as { trials?: { photo?: unknown }[] } | undefined;
  const photos = data.train.trials.map((t) => sim?.trials?.[t[0]]?.photo);
  if (photos.some((p) => typeof p !== 'string')) return undefined;
  const ids = new Map<unknown, number>();
  return photos.map((p) => ids.get(p) ?? ids.set(p, ids.size).get(p)!);
}

/** One animal's refiner training pairs: out-of-fold ridge estimates of its train trials and the true images. */
export async function refinerAnimal(dir: string, o: { imageSize?: [number, number]; folds?: number; log?: (s: string) => void } = {}): Promise<RefinerAnimal & { data: PreparedData }> {
  const ds = SensoriumDataset.open(dir);
  const data = prepareDataset(ds, { ...DEFAULT_PREPROCESS, imageSize: o.imageSize ?? DEFAULT_PREPROCESS.imageSize }, { quiet: true });
  const fit = await fitRidge(data, { outOfFold: { folds: o.folds ?? 5, groups: photoGroups(ds, data) }, log: o.log });
  return { name: basename(ds.dir), ridgeImages: fit.trainOutOfFold!, targets: data.train.images, count: data.train.count, data };
}

/** `cortexcast train refiner`: a refiner trained on several animals' ridge images, for calibrations of new ones. */
export async function trainRefinerAcrossAnimals(o: { data: string[]; steps: number; budgetSeconds?: number; imageSize?: [number, number]; log?: (s: string) => void }): Promise<TransferRefiner> {
  if (!o.data.length) throw ccError('CC_ERR_OPTION', 'train refiner: give at least one --data folder');
  const animals: RefinerAnimal[] = [];
  for (const d of o.data) {
    o.log?.(`refiner: out-of-fold ridge estimates of ${d}`);
    const { data: _data, ...a } = await refinerAnimal(d, { imageSize: o.imageSize, log: o.log });
    animals.push(a);
  }
  const [H, W] = o.imageSize ?? DEFAULT_PREPROCESS.imageSize;
  return trainTransferRefiner({ animals, height: H, width: W, steps: o.steps, budgetSeconds: o.budgetSeconds, log: o.log });
}
