import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DecoderConnection } from '../../clients/lib/index.js';
import { loadBundle } from '../../src/models/bundle.js';
import { createSession } from '../../src/models/ort.js';
import { loadServerConfig } from '../../src/server/config.js';
import { CortexcastServer } from '../../src/server/server.js';
import { SensoriumDataset } from '../../src/datasets/sensorium.js';
import { trainDecoder } from '../../src/training/decoders/train-decoder.js';
import { trainEncoder } from '../../src/training/encoder/train-encoder.js';
import { trainInvenc } from '../../src/training/encoder/train-invenc.js';
import { decodeRows } from '../../src/training/eval/evaluate.js';
import { quantizeBundle } from '../../src/training/eval/quantize-bundle.js';
import { trainAutoencoder } from '../../src/training/latent/train-autoencoder.js';
import { trainLatent } from '../../src/training/latent/train-latent.js';
import { meiFixture } from '../helpers/meis.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

/**
 * Every trained decoder kind decodes the same through the server as offline (decodeRows on its
 * bundle): one server boot serving a briefly trained CNN, GAN, inverted encoder and latent decoder,
 * and the CNN's int8 copy.
 */
const quiet = (): void => undefined;
const ITERATIVE_STEPS = 5;

describe('served equals offline, for every trained decoder kind', () => {
  let data: string;
  let server: CortexcastServer;
  let conn: DecoderConnection;
  const bundles: Record<'cnn' | 'gan' | 'invenc' | 'cnn-int8' | 'latent', string> = { cnn: '', gan: '', invenc: '', 'cnn-int8': '', latent: '' };

  beforeAll(async () => {
    data = await tinyDataset();
    const work = mkdtempSync(join(tmpdir(), 'cc-served-'));
    meiFixture(join(work, 'meis'), 24, 36, 64);
    for (const kind of ['cnn', 'gan'] as const) {
      bundles[kind] = join(work, kind);
      await trainDecoder({ kind, data, out: bundles[kind], epochs: 1, maxSteps: 2, meis: kind === 'gan' ? join(work, 'meis') : undefined, quiet: true, log: quiet });
    }
    // The default CNN (ridge refiner) quantized: its ridge MatMul becomes int8 (cortexcast quantize).
    bundles['cnn-int8'] = join(work, 'cnn-int8');
    await quantizeBundle({ model: bundles.cnn, out: bundles['cnn-int8'], data, log: quiet });
    await trainEncoder({ data: [data], out: join(work, 'encoder'), epochs: 1, batch: 16, quiet: true, log: quiet });
    bundles.invenc = join(work, 'invenc');
    await trainInvenc({ encoder: join(work, 'encoder'), out: bundles.invenc, grid: { steps: [ITERATIVE_STEPS], lr: [1000], blurSigma: [1] }, searchImages: 4, log: quiet });
    // A latent decoder on a briefly trained VAE: readin + frozen decoder in one graph.
    await trainAutoencoder({ data: [data], out: join(work, 'vae'), photoCrops: 0, batch: 8, maxSteps: 2, quiet: true, log: quiet });
    bundles.latent = join(work, 'latent');
    await trainLatent({ autoencoder: join(work, 'vae'), data, out: bundles.latent, batch: 8, maxSteps: 2, quiet: true, log: quiet });
    const models = Object.entries(bundles).map(([name, path]) => ({ name, path }));
    server = await new CortexcastServer(loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models, iterativeSteps: ITERATIVE_STEPS } }), quiet).start();
    conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
  }, 300_000);

  afterAll(async () => {
    conn?.close();
    await server?.close();
  });

  it.each(['cnn', 'gan', 'invenc', 'cnn-int8', 'latent'] as const)('%s: the served image equals the offline decode of the same frame', async (kind) => {
    const ds = SensoriumDataset.open(data);
    const raw = ds.trial(ds.indices('test')[0]).responses;
    const served = await conn.decode(kind, raw);
    const b = loadBundle(bundles[kind]);
    const bundle = kind === 'invenc' ? { ...b, manifest: { ...b.manifest, iterative: { ...b.manifest.iterative!, steps: ITERATIVE_STEPS } } } : b;
    const offline = await decodeRows((await createSession(b.model)).session, bundle, raw, 1);
    let diff = 0;
    for (let i = 0; i < offline.length; i++) diff = Math.max(diff, Math.abs(offline[i] - served.values[i]));
    expect(diff).toBeLessThan(kind === 'invenc' ? 1e-4 : 1e-5);
    const { models } = await conn.listModels();
    expect(models.find((m) => m.name === kind)).toMatchObject({ kind: kind === 'cnn-int8' ? 'cnn' : kind });
  });
});
