// Worker entry when cortexcast runs from its TypeScript sources (CLI via tsx, vitest): register tsx's
// loader inside this thread, then load the real worker. Built JavaScript uses inference-worker.js.
import { register } from 'tsx/esm/api';

register();
await import('./inference-worker.ts');
