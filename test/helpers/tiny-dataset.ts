import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { synthesize, SYNTH_PRESETS, type SynthConfig } from '../../src/training/data/synth.js';

/** A tiny simulated dataset in a temp folder, made once per test file. */
export async function tinyDataset(overrides: Partial<SynthConfig> = {}, neurons = 300): Promise<string> {
  const dir = join(mkdtempSync(join(tmpdir(), 'cc-ds-')), 'ds');
  const base = SYNTH_PRESETS.tiny;
  await synthesize(dir, { ...base, ...overrides, simulator: { ...base.simulator, neurons } }, { quiet: true });
  return dir;
}
