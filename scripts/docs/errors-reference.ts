import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERRORS } from '../../src/common/errors.js';
import { cell, code, generatedNotice, table } from './markdown.js';

/**
 * Each code's subsystem: the `// subsystem` comment above it in the catalogue's source (the runtime
 * object keeps the codes and messages, not the comments that group them).
 */
export function subsystems(catalogueSource: string): Map<string, string> {
  const out = new Map<string, string>();
  let group = 'other';
  for (const line of catalogueSource.split('\n')) {
    const heading = /^\s*\/\/\s*(.+?)\s*$/.exec(line);
    if (heading) group = heading[1];
    const entry = /^\s*(CC_ERR_[A-Z0-9_]+)\s*:/.exec(line);
    if (entry) out.set(entry[1], group);
  }
  return out;
}

/** docs/reference/errors.md: every catalogued code, grouped by subsystem, with its message template. */
export function renderErrorsReference(root: string, catalogue: Record<string, string> = ERRORS): string {
  const groups = subsystems(readFileSync(join(root, 'src/common/errors.ts'), 'utf8'));
  const bySubsystem = new Map<string, string[]>();
  for (const c of Object.keys(catalogue)) {
    const g = groups.get(c) ?? 'other';
    bySubsystem.set(g, [...(bySubsystem.get(g) ?? []), c]);
  }
  const parts = [
    generatedNotice('the error catalogue in src/common/errors.ts'),
    '',
    '# Error codes',
    '',
    'Every error cortexcast reports to a user (command line, gRPC status details, HTTP bodies, logs) starts with a stable code, then the message: `CC_ERR_NEURON_COUNT: frame has 10 neurons, model ridge expects 12`. In the messages below, `…` stands for the part filled in at the time (a file, a count, the model name).',
    '',
    'A command that stops on one of these errors prints it and exits with status 2; an error without a code (a bug) exits with status 1 and prints its stack.',
  ];
  for (const [group, codes] of bySubsystem) {
    parts.push('', `## ${group[0].toUpperCase()}${group.slice(1)}`, '', table(['Code', 'Message'], codes.map((c) => [code(c), cell(catalogue[c].replace(/%s/g, '…'))])));
  }
  return parts.join('\n') + '\n';
}
