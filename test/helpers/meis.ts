import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeNpy } from '../../src/common/npy.js';
import { Rng } from '../../src/models/rng.js';

/**
 * Smooth random MEIs for `count` neurons (every third), written as `cortexcast meis` writes them: GAN
 * tests read these instead of training an encoder and optimising MEIs first.
 */
export function meiFixture(dir: string, count: number, height: number, width: number): void {
  mkdirSync(dir, { recursive: true });
  const rng = new Rng(11);
  const meis = new Float32Array(count * height * width);
  for (let k = 0; k < count; k++) {
    const cy = rng.uniform(0, height);
    const cx = rng.uniform(0, width);
    const f = rng.uniform(0.2, 0.6);
    for (let y = 0; y < height; y++)
      for (let x = 0; x < width; x++) meis[(k * height + y) * width + x] = Math.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 40) * Math.cos(f * (x - cx));
  }
  writeNpy(join(dir, 'meis.npy'), meis, [count, height, width]);
  writeNpy(join(dir, 'neuron_index.npy'), BigInt64Array.from({ length: count }, (_, i) => BigInt(i * 3)), [count]);
  writeFileSync(join(dir, 'meis.json'), JSON.stringify({ complete: true, height, width }));
}

