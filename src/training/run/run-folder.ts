import { existsSync, mkdirSync, realpathSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { ccError } from '../../common/errors.js';
import { readJsonFile } from '../../common/json-file.js';
import { curvesSvg, reconstructionGrid, writeFile, type GridRow } from '../report/figures.js';
import type { RunRecord } from './loop.js';

export type { GridRow };

/** Why a run stopped, written to stop.json: a budgeted or interrupted run says so. */
export interface StopRecord {
  reason: 'epochs' | 'max-steps' | 'budget' | 'patience';
  step: number;
  seconds: number;
  budgetSeconds?: number;
  maxSteps?: number;
  patience?: number;
  bestEpoch: number;
  bestStep: number;
  /** The validation metric that chose the exported checkpoint, and its value there. */
  selection: string;
  bestValidation: number;
}

const RUN_RECORD = z.object({ epoch: z.number().int().min(0), step: z.number().int().min(0), seconds: z.number(), trainLoss: z.number() }).catchall(z.number());

/** checkpoint/run.json: where the loop stood; written after the recipe's own state, so it marks a complete checkpoint. */
const RUN_CHECKPOINT = z.object({ format: z.literal('cortexcast-run'), epoch: z.number().int().min(0), history: z.array(RUN_RECORD) });

export const runCheckpointFile = (ckpt: string): string => join(ckpt, 'run.json');

export function writeRunCheckpoint(ckpt: string, r: { epoch: number; history: RunRecord[] }): void {
  writeFileSync(runCheckpointFile(ckpt), JSON.stringify({ format: 'cortexcast-run', ...r }, null, 1));
}

/**
 * Write a checkpoint folder whole or not at all: into `<ckpt>.partial`, then swapped in by two
 * renames (the old one kept as `<ckpt>.previous` until the new one is in place). A run killed mid-save
 * (a Slurm time limit, a lost node) resumes from the last complete checkpoint, never from a mix of
 * two steps' tensors.
 */
export function saveCheckpointFolder(ckpt: string, write: (dir: string) => void): void {
  const partial = `${ckpt}.partial`;
  const previous = `${ckpt}.previous`;
  rmSync(partial, { recursive: true, force: true });
  mkdirSync(partial, { recursive: true });
  write(partial);
  rmSync(previous, { recursive: true, force: true });
  if (existsSync(ckpt)) renameSync(ckpt, previous);
  renameSync(partial, ckpt);
  rmSync(previous, { recursive: true, force: true });
}

/** Before resuming: a kill between saveCheckpointFolder's two renames leaves only `<ckpt>.previous`; put it back. */
export function recoverCheckpointFolder(ckpt: string): void {
  const previous = `${ckpt}.previous`;
  if (!existsSync(runCheckpointFile(ckpt)) && existsSync(runCheckpointFile(previous))) {
    rmSync(ckpt, { recursive: true, force: true });
    renameSync(previous, ckpt);
  }
}

export function readRunCheckpoint(ckpt: string): { epoch: number; history: RunRecord[] } {
  return readJsonFile(runCheckpointFile(ckpt), RUN_CHECKPOINT, 'CC_ERR_CHECKPOINT', ckpt) as { epoch: number; history: RunRecord[] };
}

export function writeConfig(run: string, config: Record<string, unknown>): void {
  writeFileSync(join(run, 'config.json'), JSON.stringify(config, null, 1));
}

/** The run folder's recorded settings (config.json), or undefined where it has none. */
export function readConfig(run: string): Record<string, unknown> | undefined {
  const file = join(run, 'config.json');
  return existsSync(file) ? readJsonFile(file, z.record(z.unknown()), 'CC_ERR_CHECKPOINT', run) : undefined;
}

/**
 * Refuse early (before minutes of setup) to resume `run` under other values of the given settings
 * than its config.json records; only the keys given are compared. The loop compares the whole config again.
 */
export function refuseChangedSettings(run: string, settings: Record<string, unknown>): void {
  const recorded = existsSync(runCheckpointFile(join(run, 'checkpoint'))) ? readConfig(run) : undefined;
  if (!recorded) return;
  const now = JSON.parse(JSON.stringify(settings)) as Record<string, unknown>;
  const changed = configChanges(Object.fromEntries(Object.keys(now).map((k) => [k, recorded[k]])), now);
  if (changed.length) throw ccError('CC_ERR_CHECKPOINT', run, `--resume with other settings than the run's (${changed.join('; ')}); start a new run folder, or resume with the same options`);
}

/** Settings a resume may change: how long the run goes on. */
const RESUMABLE_SETTINGS = new Set(['epochs']);

/**
 * A config value in a form where equal settings compare equal: object keys sorted, and a string naming
 * an existing file or folder replaced by its real path (`d/x`, `./d/x`, its absolute path and a symlink
 * to it are one dataset).
 */
function canonical(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(existsSync(v) ? realpathSync(v) : v);
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`).join(',')}}`;
  return JSON.stringify(v);
}

/** 'key: was -> now' for each setting (other than RESUMABLE_SETTINGS) that differs between a run's recorded config and a new one. */
export function configChanges(recorded: Record<string, unknown> | undefined, config: Record<string, unknown>): string[] {
  if (!recorded) return [];
  // Through JSON both ways: undefined fields vanish as they do in config.json.
  const now = JSON.parse(JSON.stringify(config)) as Record<string, unknown>;
  const keys = [...new Set([...Object.keys(recorded), ...Object.keys(now)])];
  return keys.filter((k) => !RESUMABLE_SETTINGS.has(k) && canonical(recorded[k]) !== canonical(now[k])).map((k) => `${k}: ${JSON.stringify(recorded[k]) ?? 'absent'} -> ${JSON.stringify(now[k]) ?? 'absent'}`);
}

export function writeStop(run: string, stop: StopRecord): void {
  writeFileSync(join(run, 'stop.json'), JSON.stringify(stop, null, 1));
}

/** metrics.csv and metrics.json (every validation) and curves.svg (training loss and the recipe's curves by step). */
export function writeHistory(run: string, name: string, history: RunRecord[], curves: { key: string; label: string }[]): void {
  const cols = [...new Set(history.flatMap((r) => Object.keys(r)))];
  writeFileSync(join(run, 'metrics.csv'), [cols.join(','), ...history.map((r) => cols.map((c) => r[c] ?? '').join(','))].join('\n') + '\n');
  writeFileSync(join(run, 'metrics.json'), JSON.stringify(history, null, 1));
  writeFile(
    join(run, 'curves.svg'),
    curvesSvg(
      `${name}: training loss and validation metrics by step`,
      history.map((r) => r.step),
      [{ label: 'train loss', values: history.map((r) => r.trainLoss) }, ...curves.map((c) => ({ label: `validation ${c.label}`, values: history.map((r) => r[c.key]) }))],
    ),
  );
}

export function writeValidationGrid(run: string, grid: { rows: GridRow[]; count: number; height: number; width: number }): void {
  writeFile(join(run, 'validation-grid.png'), reconstructionGrid(grid.rows, grid.count, grid.height, grid.width));
}
