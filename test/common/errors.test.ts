import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ccError, ERRORS } from '../../src/common/errors.js';
import { repoRoot } from '../helpers/paths.js';

describe('error catalogue', () => {
  it('fills templates in order and prefixes the code', () => {
    const e = ccError('CC_ERR_NEURON_COUNT', 10, 'ridge', 12);
    expect(e.message).toBe('CC_ERR_NEURON_COUNT: frame has 10 neurons, model ridge expects 12');
    expect(e.code).toBe('CC_ERR_NEURON_COUNT');
  });

  it('the error reference lists exactly the catalogued codes (else run `npm run docs`)', () => {
    const page = readFileSync(join(repoRoot, 'docs/reference/errors.md'), 'utf8');
    const documented = new Set([...page.matchAll(/`(CC_ERR_[A-Z0-9_]+)`/g)].map((m) => m[1]));
    expect([...documented].sort()).toEqual(Object.keys(ERRORS).sort());
  });
});
