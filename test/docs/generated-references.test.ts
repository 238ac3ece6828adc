import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { describe, expect, it } from 'vitest';
import { program } from '../../src/cli.js';
import { ERRORS } from '../../src/common/errors.js';
import { configSchema, ENV } from '../../src/server/config.js';
import { renderCliReference, walkCommands } from '../../scripts/docs/cli-reference.js';
import { keyOfFlag, OTHER_ENV, renderConfigReference, schemaComments, schemaKeys } from '../../scripts/docs/config-reference.js';
import { renderErrorsReference, subsystems } from '../../scripts/docs/errors-reference.js';
import { generatedReferences } from '../../scripts/docs/references.js';
import { repoRoot } from '../helpers/paths.js';

const pages = generatedReferences(repoRoot);

/** A page's section of one command: from its heading to the next heading of a command. */
const section = (page: string, path: string[]): string => {
  const start = page.indexOf(`\n${path.length === 1 ? '##' : '###'} ${path.join(' ')}\n`);
  if (start < 0) return '';
  const next = page.slice(start + 1).search(/\n##+ /);
  return next < 0 ? page.slice(start) : page.slice(start, start + 1 + next);
};

function* sources(dir: string): Generator<string> {
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) yield* sources(p);
    else if (name.endsWith('.ts')) yield p;
  }
}

describe('generated reference pages', () => {
  for (const path of Object.keys(pages))
    it(`${path} is what \`npm run docs\` generates`, () => {
      let committed = '';
      try {
        committed = readFileSync(join(repoRoot, path), 'utf8');
      } catch {
        // A missing page fails the comparison below with the same instruction.
      }
      expect(committed, `${path} differs from the program it documents: run \`npm run docs\``).toBe(pages[path]);
    });
});

describe('the command-line reference', () => {
  const page = pages['docs/reference/cli.md'];
  const commands = walkCommands(program);

  it('has a section for every command and subcommand, export triton included', () => {
    expect(commands.map((c) => c.path.join(' '))).toContain('export triton');
    for (const { path, command } of commands) {
      const s = section(page, path);
      expect(s, path.join(' ')).not.toBe('');
      for (const o of command.options) expect(s, `${path.join(' ')} ${o.long}`).toContain(`\`${o.flags}\``);
    }
    const global = page.slice(page.indexOf('## Options of every command'), page.indexOf('## Commands'));
    for (const o of program.options) expect(global, o.long).toContain(`\`${o.flags}\``);
  });

  it('shows choices and defaults as the program declares them', () => {
    const cnn = section(page, ['train', 'cnn']);
    expect(cnn).toMatch(/\| `--epochs <n>` \|[^\n]*\| `200` \|/);
    expect(cnn).toMatch(/\| `--loss <name>` \| training objective[^\n]*\| `mse`, `logssim`, `mae`, `mse\+logssim` \| `mse\+logssim` \|/);
    expect(section(page, ['serve'])).toContain('docs/reference/configuration.md');
  });

  it('walks a program it has not seen: nested commands, choices, defaults, arguments', () => {
    const p = new Command('cortexcast');
    const outer = p.command('outer').description('outer things');
    outer
      .command('inner <dir>')
      .description('takes REPO/<name>')
      .addOption(new Option('--mode <m>', 'a | b').choices(['a', 'b']).default('b'))
      .option('--flag', 'on or off');
    const text = renderCliReference(p);
    expect(text).toContain('### outer inner');
    expect(text).toContain('cortexcast outer inner <dir> [options]');
    expect(text).toContain('takes REPO/&lt;name>');
    expect(text).toContain('| `--mode <m>` | a \\| b | `a`, `b` | `b` |');
    expect(text).toContain('| `--flag` | on or off |  |  |');
  });
});

describe('the configuration reference', () => {
  const page = pages['docs/reference/configuration.md'];

  it('lists every key of the schema with its default, and every variable the server reads', () => {
    for (const k of schemaKeys(configSchema)) expect(page, k.path).toContain(`| \`${k.path}\` |`);
    for (const name of Object.keys(ENV)) expect(page, name).toContain(`\`${name}\``);
    expect(page).toMatch(/\| `limits\.maxStreams` \|[^\n]*\| `64` \|/);
    expect(page).toMatch(/\| `threads` \|[^\n]*\| `--threads` \| `CORTEXCAST_THREADS` \|/);
  });

  it('documents every CORTEXCAST_* variable the sources read', () => {
    const read = new Set<string>();
    for (const f of sources(join(repoRoot, 'src'))) for (const m of readFileSync(f, 'utf8').matchAll(/CORTEXCAST_[A-Z0-9_]+/g)) read.add(m[0]);
    const documented = new Set([...Object.keys(ENV), ...OTHER_ENV.map((e) => e.name)]);
    expect([...read].filter((v) => !documented.has(v))).toEqual([]);
    expect(read.has('CORTEXCAST_THREADS')).toBe(true);
  });

  it('reads the comments of nested and array-item keys from the schema source', () => {
    const c = schemaComments(
      'const other = {\n  /** Not a key. */\n  host: 1,\n};\nconst modelSchema = z.object({\n  /** The bundle. */\n  path: z.string(),\n});\nexport const configSchema = z.object({\n  limits: z.object({\n    /** At most this many. */\n    maxStreams: z.number(),\n  }),\n});',
    );
    expect(c.get('models[].path')).toBe('The bundle.');
    expect(c.get('limits.maxStreams')).toBe('At most this many.');
    expect(c.has('host')).toBe(false);
  });

  it('finds the key of a flag by its name, nested or plural, and the table of exceptions', () => {
    const keys = new Set(['models', 'framePolicy', 'auth.token', 'auth.allowedOrigins', 'models[].token']);
    expect(['model', 'policy', 'token', 'allowedOrigin', 'mystery'].map((a) => keyOfFlag(a, keys))).toEqual(['models', 'framePolicy', 'auth.token', 'auth.allowedOrigins', undefined]);
  });

  it('refuses a serve flag that sets no configuration key', () => {
    const p = new Command('cortexcast');
    p.command('serve').option('--mystery <n>', 'sets nothing');
    expect(() => renderConfigReference(repoRoot, p)).toThrow(/--mystery sets no configuration key/);
  });
});

describe('the error reference', () => {
  it('groups the codes by the catalogue comments and lists each message once', () => {
    const g = subsystems("export const ERRORS = {\n  // data\n  CC_ERR_A: 'a %s',\n  // training\n  CC_ERR_B: 'b',\n};");
    expect(Object.fromEntries(g)).toEqual({ CC_ERR_A: 'data', CC_ERR_B: 'training' });
    const page = renderErrorsReference(repoRoot);
    for (const code of Object.keys(ERRORS)) expect(page.split(`| \`${code}\` |`).length, code).toBe(2);
    expect(page).toContain('| `CC_ERR_NEURON_COUNT` | frame has … neurons, model … expects … |');
  });
});
