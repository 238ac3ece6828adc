import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { replay } from '../../clients/replay/replay.js';
import { DecoderConnection } from '../../clients/lib/index.js';
import { loadServerConfig } from '../../src/server/config.js';
import { CortexcastServer } from '../../src/server/server.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';
import { repoRoot } from '../helpers/paths.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));

describe.skipIf(!CHROMIUM)('viewer in headless Chromium', () => {
  let server: CortexcastServer;
  let data: string;
  const ac = new AbortController();
  beforeAll(async () => {
    data = await tinyDataset({}, 200);
    const bundle = join(mkdtempSync(join(tmpdir(), 'cc-view-')), 'ridge');
    await trainRidge({ data, out: bundle, quiet: true, log: () => undefined });
    server = await new CortexcastServer(loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'ridge', path: bundle }] } }), () => undefined).start();
    void replay({ data, server: `127.0.0.1:${server.grpcPort}`, model: 'ridge', rate: 30, loop: true, streamId: 'e2e', signal: ac.signal });
  }, 120_000);
  afterAll(async () => {
    ac.abort();
    await server?.close();
  });

  it('shows live frames: the canvas is not blank, the counter advances, scores and latency appear', async () => {
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--no-first-run'],
    });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 560 } });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`http://127.0.0.1:${server.httpPort}/?model=ridge`);
      await page.waitForFunction(() => Number(document.getElementById('frames')!.textContent) > 5, undefined, { timeout: 20_000 });
      const first = Number(await page.textContent('#frames'));
      await page.waitForTimeout(700);
      const second = Number(await page.textContent('#frames'));
      expect(second).toBeGreaterThan(first);
      const spread = await page.evaluate(() => {
        const c = document.getElementById('recon') as HTMLCanvasElement;
        const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
        let lo = 255;
        let hi = 0;
        for (let i = 0; i < d.length; i += 4) {
          lo = Math.min(lo, d[i]);
          hi = Math.max(hi, d[i]);
        }
        return hi - lo;
      });
      expect(spread).toBeGreaterThan(20);
      await page.waitForFunction(() => document.getElementById('ssim')!.textContent !== '-', undefined, { timeout: 5000 });
      expect(await page.textContent('#provider')).toBe('cpu');
      expect(await page.textContent('#e2e')).toMatch(/ms/);
      expect(await page.textContent('#server')).toMatch(/^\d+\.\d ms \/ \d+\.\d ms$/);
      expect(errors).toEqual([]);
      // A rig whose clock runs 10 s ahead: the server-measured stages still show, rig-to-browser does not.
      const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
      const skew = conn.openStream();
      let seq = 0;
      const timer = setInterval(() => skew.send({ streamId: 'skew', model: 'ridge', sequence: ++seq, responses: new Float32Array(200).fill(0.5), acquiredAtUs: (Date.now() + 10_000) * 1000 }), 33);
      try {
        await page.waitForFunction(() => [...(document.getElementById('stream') as HTMLSelectElement).options].some((o) => o.value === 'skew'), undefined, { timeout: 10_000 });
        await page.selectOption('#stream', 'skew');
        await page.waitForFunction(() => document.getElementById('e2e')!.textContent === 'n/a (clocks disagree)', undefined, { timeout: 5000 });
        expect(await page.textContent('#server')).toMatch(/^\d+\.\d ms \/ \d+\.\d ms$/);
        await page.selectOption('#stream', 'e2e');
        await page.waitForFunction(() => /ms/.test(document.getElementById('e2e')!.textContent ?? ''), undefined, { timeout: 5000 });
      } finally {
        clearInterval(timer);
        skew.end();
        conn.close();
      }
      const out = join(repoRoot, '.cache');
      mkdirSync(out, { recursive: true });
      await page.screenshot({ path: join(out, 'viewer-e2e.png') });
    } finally {
      await browser.close();
    }
  });
});

if (!CHROMIUM) console.warn('SKIPPED: viewer end-to-end test - chromium is not installed (apt-get install chromium)');
