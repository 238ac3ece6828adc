import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
/** shared/ sits beside the checkout (developers, CI) or inside it (device machine). */
export const sharedDir = [join(repoRoot, '..', 'shared'), join(repoRoot, 'shared')].find((d) => existsSync(d)) ?? join(repoRoot, '..', 'shared');
