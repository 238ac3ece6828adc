#!/usr/bin/env node
// The CLI runs the TypeScript sources directly through tsx (no build step to forget); worker threads
// inherit the loader through --import in execArgv.
import { register } from 'tsx/esm/api';

register();
// Training commands run with glibc settings that keep freed gigabyte blocks for reuse
// (src/common/allocator.ts); glibc reads them only at start, hence the relaunch.
const TRAINING_COMMANDS = new Set(['train', 'meis']);
if (TRAINING_COMMANDS.has(process.argv[2])) {
  const { trainingAllocatorEnv, relaunch } = await import('../src/common/allocator.ts');
  const env = trainingAllocatorEnv();
  if (env) process.exit(await relaunch(process.argv.slice(1), env));
}
await import('../src/cli.ts');
