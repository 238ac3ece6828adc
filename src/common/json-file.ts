import { existsSync, readFileSync } from 'node:fs';
import type { z } from 'zod';
import { ccError, type ErrorCode } from './errors.js';

/**
 * Read a JSON file the project wrote earlier and check it against its schema: a hand-edited, cut or
 * foreign file fails here with the file and the field named, under the caller's error code, instead
 * of a TypeError somewhere later.
 */
export function readJsonFile<S extends z.ZodTypeAny>(file: string, schema: S, code: ErrorCode, where: string): z.output<S> {
  if (!existsSync(file)) throw ccError(code, where, `${file} does not exist`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw ccError(code, where, `${file} is not valid JSON (${(e as Error).message})`);
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw ccError(code, where, `${file}: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`);
  return r.data as z.output<S>;
}
