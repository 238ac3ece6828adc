import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { isPlainName } from '../../common/atomic-dir.js';
import { ccError } from '../../common/errors.js';
import { readJsonFile } from '../../common/json-file.js';
import { readNpy, writeNpy, type NpyArray } from '../../common/npy.js';

/** checkpoint.json as writeCheckpoint writes it; resume refuses anything else with the field named. */
const CHECKPOINT_JSON = z
  .object({
    format: z.literal('cortexcast-checkpoint'),
    formatVersion: z.number().int().min(1).max(1),
    step: z.number().int().min(0),
    seed: z.number(),
    tensors: z.record(z.string(), z.string()),
    extra: z.record(z.string(), z.unknown()),
  })
  .passthrough();

export interface CheckpointMeta {
  name: string;
  step: number;
  seed: number;
  optimizer: unknown;
  groups: unknown[];
  schedule: unknown;
  extra: Record<string, unknown>;
}

/** A checkpoint folder: checkpoint.json and one .npy per tensor under tensors/. */
export function writeCheckpoint(dir: string, tensors: ReadonlyMap<string, { data: Float32Array; dims: readonly number[] }>, meta: CheckpointMeta): void {
  mkdirSync(join(dir, 'tensors'), { recursive: true });
  const files: Record<string, string> = {};
  let i = 0;
  for (const [k, v] of tensors) {
    const file = `tensors/${String(i++).padStart(4, '0')}.npy`;
    writeNpy(join(dir, file), v.data, v.dims as number[]);
    files[k] = file;
  }
  const { extra, ...rest } = meta;
  writeFileSync(join(dir, 'checkpoint.json'), JSON.stringify({ format: 'cortexcast-checkpoint', formatVersion: 1, ...rest, tensors: files, extra }, null, 1));
}

/** Open a checkpoint for a run with this seed; `tensor(name)` reads one tensor or says it is missing. */
export function readCheckpoint(dir: string, seed: number): { step: number; extra: Record<string, unknown>; tensor: (name: string) => NpyArray } {
  const meta = readJsonFile(join(dir, 'checkpoint.json'), CHECKPOINT_JSON, 'CC_ERR_CHECKPOINT', dir);
  if (meta.seed !== seed) throw ccError('CC_ERR_CHECKPOINT', dir, `its seed ${meta.seed} differs from this run's seed ${seed}`);
  return {
    step: meta.step,
    extra: meta.extra,
    tensor: (name) => {
      const f = meta.tensors[name];
      if (!f) throw ccError('CC_ERR_CHECKPOINT', dir, `it lacks tensor '${name}' (a different model?)`);
      if (!f.split('/').every(isPlainName)) throw ccError('CC_ERR_CHECKPOINT', dir, `tensor '${name}' names file ${JSON.stringify(f.slice(0, 200))}, which leaves the checkpoint folder`);
      return readNpy(join(dir, f));
    },
  };
}
