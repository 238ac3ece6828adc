/**
 * `npm run docs`: writes the generated reference pages (docs/reference/cli.md, configuration.md,
 * errors.md) from the command-line program, the server's configuration schema and the error
 * catalogue. test/docs/generated-references.test.ts fails when a committed page differs.
 */
import { writeFileAtomic } from '../src/common/atomic-file.js';
import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { generatedReferences, REPO_ROOT } from './docs/references.js';


for (const [path, text] of Object.entries(generatedReferences())) {
  writeFileAtomic(join(REPO_ROOT, path), text);
  console.log(`wrote ${path}`);
}
