import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { repoRoot } from './helpers/paths.js';

/**
 * The layering rule, read from the imports themselves (static and dynamic):
 * - src/common imports nothing of the project;
 * - src/datasets (the file format: reader, preprocessing) imports only src/common;
 * - src/models imports neither src/training nor src/server;
 * - src/training and src/server never import each other (they meet at the bundle on disk);
 * - clients/ speak the public protocols: of the project they read only src/datasets and src/common.
 */
const AREAS = ['src/common', 'src/datasets', 'src/models', 'src/training', 'src/server', 'clients', 'src'] as const;
type Area = (typeof AREAS)[number];

const FORBIDDEN: Record<Exclude<Area, 'src'>, Area[]> = {
  'src/common': ['src/datasets', 'src/models', 'src/training', 'src/server', 'clients', 'src'],
  'src/datasets': ['src/models', 'src/training', 'src/server', 'clients', 'src'],
  'src/models': ['src/training', 'src/server', 'clients', 'src'],
  'src/training': ['src/server', 'clients'],
  'src/server': ['src/training', 'clients'],
  clients: ['src/models', 'src/training', 'src/server', 'src'],
};

function areaOf(file: string): Area | undefined {
  const rel = relative(repoRoot, file).replaceAll('\\', '/');
  return AREAS.find((a) => rel === a || rel.startsWith(`${a}/`));
}

function* sources(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* sources(p);
    else if (/\.(ts|mts|js|mjs)$/.test(name)) yield p;
  }
}

const IMPORT = /(?:\bfrom\s+|\bimport\s*\(\s*|^\s*import\s+)(['"])(\.[^'"]+)\1/gm;

/** Files (absolute path -> source text) -> every import that breaks the rule. */
function violations(files: Map<string, string>): string[] {
  const out: string[] = [];
  for (const [file, text] of files) {
    const from = areaOf(file);
    if (!from || from === 'src') continue;
    for (const m of text.matchAll(IMPORT)) {
      const to = areaOf(resolve(dirname(file), m[2]));
      if (to && to !== from && FORBIDDEN[from].includes(to)) out.push(`${relative(repoRoot, file)} imports ${m[2]} (${from} -> ${to})`);
    }
  }
  return out;
}

const projectFiles = (): Map<string, string> => new Map(['src', 'clients'].flatMap((top) => [...sources(join(repoRoot, top))].map((f) => [f, readFileSync(f, 'utf8')] as [string, string])));

describe('layering', () => {
  it('no module imports across the rule', () => {
    expect(violations(projectFiles())).toEqual([]);
  });

  it('the check catches static, dynamic and side-effect imports across the rule', () => {
    const at = (p: string): string => join(repoRoot, p);
    const found = violations(
      new Map([
        [at('clients/replay/bad.ts'), "import { trainRidge } from '../../src/training/train-ridge.js';"],
        [at('src/models/bad.ts'), "const s = await import('../server/server.js');"],
        [at('src/datasets/bad.ts'), "import '../models/ort.js';"],
        [at('src/server/bad.ts'), "export { x } from '../training/losses.js';"],
        [at('src/training/ok.ts'), "import { loadBundle } from '../models/bundle.js';"],
        [at('clients/ok.ts'), "import { SensoriumDataset } from '../src/datasets/sensorium.js';"],
      ]),
    );
    expect(found).toEqual([
      'clients/replay/bad.ts imports ../../src/training/train-ridge.js (clients -> src/training)',
      'src/models/bad.ts imports ../server/server.js (src/models -> src/server)',
      'src/datasets/bad.ts imports ../models/ort.js (src/datasets -> src/models)',
      'src/server/bad.ts imports ../training/losses.js (src/server -> src/training)',
    ]);
  });
});
