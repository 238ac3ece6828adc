import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const pkgPath = fileURLToPath(new URL('../../package.json', import.meta.url));
export const VERSION = (JSON.parse(readFileSync(pkgPath, 'utf8')) as { version: string }).version;
export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
