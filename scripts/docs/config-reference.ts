import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import ts from 'typescript';
import { z } from 'zod';
import { configSchema, ENV } from '../../src/server/config.js';
import { cell, code, generatedNotice, table } from './markdown.js';

/** Variables read outside the server's configuration; a test checks every CORTEXCAST_* in src/ is here or in ENV. */
export const OTHER_ENV: { name: string; readBy: string; meaning: string }[] = [
  {
    name: 'CORTEXCAST_THREADS',
    readBy: 'every command',
    meaning:
      "ONNX Runtime intra-op threads of every session a command opens; one meaning in every command. Commands other than `serve` default to all cores. `serve` opens one session per inference worker and defaults to 1: it is the `threads` key above (flag and config file take precedence), so the server's threads in all are workers x threads. `experiment --jobs N` sets it to cores/N for each child process unless it is set; Slurm tasks take `--cpus-per-task`, else this variable, else 1.",
  },
  { name: 'CORTEXCAST_CACHE', readBy: 'training, evaluation, experiment', meaning: 'Folder of converted feature networks (FID, NSFW filter); default `.cache/` in the working directory. Experiment children and Slurm tasks get the submitter\'s, absolute.' },
  { name: 'CORTEXCAST_TOKEN', readBy: '`serve`, `replay`, `record`', meaning: 'The shared auth token when `--token` is not given (the `auth.token` key above for `serve`).' },
];

/**
 * Serve flags whose configuration key is not found from the flag's name (the name itself, or a
 * nested key ending in it, singular or plural: --token is auth.token, --allowed-origin auth.allowedOrigins).
 */
const FLAG_KEYS: Record<string, string> = {
  policy: 'framePolicy',
  invencSteps: 'iterativeSteps',
  tlsCert: 'tls.cert',
  tlsKey: 'tls.key',
};

/**
 * The JSDoc comment of every key of the schema objects in config.ts, by key path ('limits.maxStreams',
 * 'models[].steps'): the schema's documentation lives beside the schema, where it is kept up.
 */
export function schemaComments(source: string): Map<string, string> {
  const file = ts.createSourceFile('config.ts', source, ts.ScriptTarget.Latest, true);
  const out = new Map<string, string>();
  // path: undefined outside the two schema declarations, whose objects are the only ones documented.
  const visit = (node: ts.Node, path: string[] | undefined): void => {
    if (ts.isVariableDeclaration(node) && ts.isIdentifier(node.name)) {
      const prefix = node.name.text === 'modelSchema' ? ['models[]'] : node.name.text === 'configSchema' ? [] : undefined;
      return ts.forEachChild(node, (c) => visit(c, prefix));
    }
    if (path && ts.isPropertyAssignment(node) && (ts.isIdentifier(node.name) || ts.isStringLiteral(node.name))) {
      const here = [...path, node.name.text];
      const doc = ts
        .getJSDocCommentsAndTags(node)
        .map((d) => (ts.isJSDoc(d) ? ts.getTextOfJSDocComment(d.comment) ?? '' : ''))
        .join(' ')
        .trim();
      if (doc) out.set(here.join('.'), doc);
      return ts.forEachChild(node, (c) => visit(c, here));
    }
    ts.forEachChild(node, (c) => visit(c, path));
  };
  visit(file, undefined);
  return out;
}

interface Key {
  path: string;
  type: string;
  bounds: string;
  default?: unknown;
  required: boolean;
}

/** Leaves of a zod schema: one row per key, nested objects flattened to dotted paths. */
export function schemaKeys(schema: z.ZodTypeAny, path = '', required = true, dflt?: unknown): Key[] {
  if (schema instanceof z.ZodDefault) return schemaKeys(schema._def.innerType, path, false, schema._def.defaultValue());
  if (schema instanceof z.ZodOptional) return schemaKeys(schema._def.innerType, path, false, dflt);
  if (schema instanceof z.ZodEffects) return schemaKeys(schema._def.schema, path, required, dflt);
  if (schema instanceof z.ZodObject) {
    const keys = Object.entries(schema.shape as Record<string, z.ZodTypeAny>).flatMap(([k, v]) => schemaKeys(v, path ? `${path}.${k}` : k));
    // An optional object (tls, a model's responseWindow) gets its own row: its keys are required only when it is given.
    return path && !required && dflt === undefined ? [{ path, type: 'object', bounds: '', required }, ...keys] : keys;
  }
  if (schema instanceof z.ZodArray) {
    const element = schema._def.type as z.ZodTypeAny;
    const min = schema._def.minLength as { value: number; message?: string } | null;
    const bounds = min ? min.message ?? `at least ${min.value} item${min.value === 1 ? '' : 's'}` : '';
    if (element instanceof z.ZodObject) return [{ path, type: 'array of objects', bounds, default: dflt, required }, ...schemaKeys(element, `${path}[]`)];
    const item = describe(element);
    return [{ path, type: `array of ${item.type === 'one of' ? 'string' : item.type}s`, bounds: [bounds, item.type === 'one of' ? `each one of ${item.bounds}` : item.bounds].filter(Boolean).join('; '), default: dflt, required }];
  }
  return [{ path, ...describe(schema), default: dflt, required }];
}

function describe(schema: z.ZodTypeAny): { type: string; bounds: string } {
  if (schema instanceof z.ZodNumber) {
    const checks = schema._def.checks;
    const isInt = checks.some((c) => c.kind === 'int');
    const min = checks.find((c) => c.kind === 'min') as { value: number } | undefined;
    const max = checks.find((c) => c.kind === 'max') as { value: number } | undefined;
    const bounds = min && max ? `${fmt(min.value)} to ${fmt(max.value)}` : min ? `at least ${fmt(min.value)}` : max ? `at most ${fmt(max.value)}` : '';
    return { type: isInt ? 'integer' : 'number', bounds };
  }
  if (schema instanceof z.ZodString) {
    const min = schema._def.checks.find((c) => c.kind === 'min') as { value: number } | undefined;
    const regex = schema._def.checks.find((c) => c.kind === 'regex') as { message?: string } | undefined;
    return { type: 'string', bounds: [min ? `at least ${min.value} characters` : '', regex?.message ?? ''].filter(Boolean).join('; ') };
  }
  if (schema instanceof z.ZodEnum) return { type: 'one of', bounds: (schema._def.values as string[]).map(code).join(', ') };
  if (schema instanceof z.ZodBoolean) return { type: 'boolean', bounds: '' };
  return { type: schema._def.typeName as string, bounds: '' };
}

const fmt = (n: number): string => (Number.isInteger(n) && Math.abs(n) >= 10_000 ? n.toLocaleString('en-US') : String(n));

const shown = (v: unknown): string => (v === undefined ? '' : code(typeof v === 'string' ? v : JSON.stringify(v)));

/** The key path each environment variable sets (found by calling its parser). */
function envKeys(): Map<string, string> {
  const out = new Map<string, string>();
  const leafPath = (o: unknown, prefix = ''): string => {
    const [k, v] = Object.entries(o as object)[0];
    return v && typeof v === 'object' && !Array.isArray(v) ? leafPath(v, `${prefix}${k}.`) : `${prefix}${k}`;
  };
  for (const [name, parse] of Object.entries(ENV)) out.set(leafPath(parse('1')), name);
  return out;
}

/** The configuration key a serve flag sets, or undefined. */
export function keyOfFlag(attribute: string, keys: Set<string>): string | undefined {
  if (FLAG_KEYS[attribute]) return keys.has(FLAG_KEYS[attribute]) ? FLAG_KEYS[attribute] : undefined;
  for (const name of [attribute, `${attribute}s`]) {
    if (keys.has(name)) return name;
    const nested = [...keys].filter((k) => k.endsWith(`.${name}`) && !k.includes('[]'));
    if (nested.length === 1) return nested[0];
  }
  return undefined;
}

/** Config key -> its `serve` flags; throws when a serve flag has no key (a flag the page would leave out). */
function flagKeys(serve: Command, keys: Set<string>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const o of serve.options) {
    if (o.long === '--config') continue;
    const key = keyOfFlag(o.attributeName(), keys);
    if (!key) throw new Error(`serve ${o.long} sets no configuration key '${o.attributeName()}': map it in FLAG_KEYS (scripts/docs/config-reference.ts)`);
    out.set(key, [...(out.get(key) ?? []), o.long!]);
  }
  return out;
}

/** docs/reference/configuration.md: every server configuration key, its flag, variable, default and bounds. */
export function renderConfigReference(root: string, program: Command): string {
  const serve = program.commands.find((c) => c.name() === 'serve');
  if (!serve) throw new Error('the program has no serve command');
  const comments = schemaComments(readFileSync(join(root, 'src/server/config.ts'), 'utf8'));
  const keys = schemaKeys(configSchema);
  const flags = flagKeys(serve, new Set(keys.map((k) => k.path)));
  const env = envKeys();
  const rows = keys.map((k) => [
    code(k.path),
    cell(comments.get(k.path) ?? ''),
    k.type,
    cell(k.bounds),
    k.required ? 'required' : shown(k.default),
    (flags.get(k.path) ?? []).map(code).join(', '),
    env.has(k.path) ? code(env.get(k.path)!) : '',
  ]);
  return [
    generatedNotice('the configuration schema in src/server/config.ts'),
    '',
    '# Server configuration',
    '',
    '`cortexcast serve` reads its settings from four places, each overriding the one before: the defaults below < a JSON file (`--config FILE`) < environment variables < command-line flags. Everything is validated at start, every problem reported together as `CC_ERR_CONFIG`; unknown keys are refused. Durations are in milliseconds, sizes in bytes. Keys with a dot are nested objects in the file: `limits.maxStreams` is `{"limits": {"maxStreams": 128}}`; `models[]` keys belong to each entry of the `models` array.',
    '',
    '```json',
    '{ "models": [{ "name": "cnn", "path": "bundles/cnn" }], "workers": 2, "limits": { "maxStreams": 128 } }',
    '```',
    '',
    '## Keys',
    '',
    table(['Key', 'Meaning', 'Type', 'Bounds', 'Default', 'Flag', 'Environment'], rows),
    '',
    '## Environment variables outside the server configuration',
    '',
    table(['Variable', 'Read by', 'Meaning'], OTHER_ENV.map((e) => [code(e.name), e.readBy, cell(e.meaning)])),
    '',
  ].join('\n');
}
