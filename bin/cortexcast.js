#!/usr/bin/env node
// The CLI runs the TypeScript sources directly through tsx (no build step to forget); worker threads
// inherit the loader through --import in execArgv.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli.ts');
