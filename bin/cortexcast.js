#!/usr/bin/env node
// The CLI runs the TypeScript sources directly through tsx (no build step to forget); worker threads
// inherit the loader through --import in execArgv.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/cli.ts');
await main();
