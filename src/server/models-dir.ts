import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import type { ModelConfig, ServerConfig } from './config.js';

const MODEL_NAME = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * The bundles of `modelsDir`, each served under its folder's name, read at start and on every reload:
 * a bundle written there (by `cortexcast calibrate`, for an animal no served model knows) serves from
 * the next reload on. Hidden entries (a writer's temporary folders) and folders without a manifest
 * are passed over; a configured model keeps its name (the folder of the same name is not served).
 */
export function modelsInDir(cfg: Pick<ServerConfig, 'models' | 'modelsDir'>): ModelConfig[] {
  if (!cfg.modelsDir) return [];
  const taken = new Set(cfg.models.map((m) => m.name));
  let names: string[];
  try {
    names = readdirSync(cfg.modelsDir).sort();
  } catch {
    return [];
  }
  return names
    .filter((n) => !n.startsWith('.') && MODEL_NAME.test(n) && !taken.has(n) && existsSync(join(cfg.modelsDir!, n, 'manifest.json')))
    .map((name) => ({ name, path: join(cfg.modelsDir!, name) }));
}
