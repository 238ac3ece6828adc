import { fileURLToPath } from 'node:url';
import { program } from '../../src/cli.js';
import { renderCliReference } from './cli-reference.js';
import { renderConfigReference } from './config-reference.js';
import { renderErrorsReference } from './errors-reference.js';

export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** The generated reference pages, by path from the repository root. */
export function generatedReferences(root = REPO_ROOT): Record<string, string> {
  return {
    'docs/reference/cli.md': renderCliReference(program),
    'docs/reference/configuration.md': renderConfigReference(root, program),
    'docs/reference/errors.md': renderErrorsReference(root),
  };
}
