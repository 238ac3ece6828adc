import { extname } from 'node:path';
import { ccError } from '../common/errors.js';
import { SensoriumDataset } from './sensorium.js';
import type { NwbDatasetOptions } from './nwb-dataset.js';

/**
 * The one entry point for `--data`: a folder in the SENSORIUM layout, or an NWB file (`.nwb`), whose
 * trials are cut from its continuous traces. Both present the same members, so the rest of the
 * pipeline does not know which it reads.
 *
 * NWB support (the HDF5 library in WebAssembly) is loaded only when asked for, so reading SENSORIUM
 * folders never pays for it: `await loadNwbSupport()` once before opening `.nwb` files (the command
 * line does it when an argument names one).
 */
export const isNwbPath = (p: string): boolean => extname(p).toLowerCase() === '.nwb';

type NwbOpener = (file: string, o: NwbDatasetOptions) => SensoriumDataset;
let nwbOpener: NwbOpener | undefined;
let nwbDefaults: NwbDatasetOptions = {};

/** Called by the NWB module as it loads. */
export function registerNwbOpener(open: NwbOpener): void {
  nwbOpener = open;
}

export async function loadNwbSupport(): Promise<void> {
  await import('./nwb-dataset.js');
}

/** How NWB files given as `--data` are read (series, stimulus, response window): set once by the CLI. */
export function configureNwbReading(o: NwbDatasetOptions): void {
  nwbDefaults = Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));
}

export function openDataset(path: string, o?: NwbDatasetOptions): SensoriumDataset {
  if (!isNwbPath(path)) return SensoriumDataset.open(path);
  if (!nwbOpener) throw ccError('CC_ERR_NWB_FORMAT', path, 'NWB support is not loaded (await loadNwbSupport() from src/datasets/dataset-source.ts before opening .nwb files)');
  return nwbOpener(path, o ?? nwbDefaults);
}
