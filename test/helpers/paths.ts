import { fileURLToPath } from 'node:url';
import { join } from 'node:path';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
/** Reference values computed by independent implementations (scikit-image), checked in beside the tests. */
export const fixturesDir = join(repoRoot, 'test', 'fixtures');
