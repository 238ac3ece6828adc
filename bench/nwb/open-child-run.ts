import { openDataset, loadNwbSupport } from '../../src/datasets/dataset-source.js';
import { importNwb } from '../../src/datasets/nwb-import.js';

/**
 * argv: nwb FILE | import FILE OUT | sensorium DIR. Prints {seconds, peakRssMB, trials, neurons}; the
 * peak is the kernel's maximum resident set size of the process (the work is synchronous, so sampling
 * from a timer would miss it).
 */
const [what, path, out] = process.argv.slice(2);
await loadNwbSupport();
const t0 = performance.now();
let trials = 0;
let neurons = 0;
if (what === 'import') {
  const r = importNwb(path, out, { force: true });
  trials = r.trials;
  neurons = r.neurons;
} else {
  const ds = openDataset(path);
  // Every trial read once, as training's preprocessing does.
  for (let i = 0; i < ds.trialCount; i++) ds.trial(i);
  trials = ds.trialCount;
  neurons = ds.neurons;
}
const seconds = (performance.now() - t0) / 1000;
console.log(JSON.stringify({ what, seconds, peakRssMB: process.resourceUsage().maxRSS / 1024, trials, neurons }));
