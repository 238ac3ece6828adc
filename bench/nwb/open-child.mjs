// One measurement of `npm run bench:nwb`, in its own process so its peak memory is its own. It
// starts as bin/cortexcast.js does: tsx's ES module loader only (see src/datasets/hdf5.ts on why
// h5wasm is loaded with require()).
const { register } = await import('tsx/esm/api');
register();
await import('./open-child-run.ts');
