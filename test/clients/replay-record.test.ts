import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { record } from '../../clients/record/record.js';
import { replay } from '../../clients/replay/replay.js';
import { readNpy } from '../../src/common/npy.js';
import { loadServerConfig } from '../../src/server/config.js';
import { CortexcastServer } from '../../src/server/server.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';
import { DecoderConnection } from '../../clients/lib/index.js';

let data: string;
let bundle: string;
beforeAll(async () => {
  data = await tinyDataset({}, 200);
  bundle = join(mkdtempSync(join(tmpdir(), 'cc-rr-')), 'ridge');
  await trainRidge({ data, out: bundle, quiet: true, log: () => undefined });
}, 120_000);

const start = (grpcPort = 0): Promise<CortexcastServer> =>
  new CortexcastServer(loadServerConfig({ flags: { grpcPort, httpPort: 0, models: [{ name: 'ridge', path: bundle }], shutdownGraceMs: 500 } }), () => undefined).start();

describe('replay client', () => {
  it('keeps the requested rate (60 frames at 60 Hz take ~1 s) with small jitter, and every frame is decoded', async () => {
    const server = await start();
    const t0 = performance.now();
    const s = await replay({ data, server: `127.0.0.1:${server.grpcPort}`, model: 'ridge', rate: 60, loop: true, maxFrames: 60 });
    const seconds = (performance.now() - t0) / 1000;
    expect(s.sent).toBe(60);
    expect(seconds).toBeGreaterThan(0.95);
    expect(seconds).toBeLessThan(2.5);
    expect(s.jitterP50).toBeLessThan(5);
    expect(s.decoded + s.dropped).toBe(60);
    expect(s.rejected).toBe(0);
    await server.close();
  });

  it('--protocol v2 replays through Open Inference Protocol ModelInfer calls, with round-trip times; a wrong model is rejected', async () => {
    const server = await start();
    const s = await replay({ data, server: `127.0.0.1:${server.grpcPort}`, model: 'ridge', rate: 60, loop: true, maxFrames: 60, protocol: 'v2' });
    expect(s.sent + s.dropped).toBe(60);
    expect(s.decoded).toBe(s.sent);
    expect(s.decoded).toBeGreaterThan(50);
    expect(s.rttP50).toBeGreaterThan(0);
    const metrics = await (await fetch(`http://127.0.0.1:${server.httpPort}/metrics`)).text();
    expect(metrics).toMatch(new RegExp(`cortexcast_unary_decodes_total\\{model="ridge",code="OK"\\} ${s.decoded}`));
    const bad = await replay({ data, server: `127.0.0.1:${server.grpcPort}`, model: 'nope', rate: 0, maxFrames: 3, protocol: 'v2' });
    expect(bad.rejected).toBe(3);
    expect(bad.lastReject).toMatch(/CC_ERR_UNKNOWN_MODEL/);
    await server.close();
  });

  it('reconnects after a server restart, resumes at the next frame and reports what was lost', async () => {
    let server = await start();
    const port = server.grpcPort;
    const run = replay({ data, server: `127.0.0.1:${port}`, model: 'ridge', rate: 50, loop: true, maxFrames: 150 });
    await new Promise((r) => setTimeout(r, 800));
    await server.close();
    await new Promise((r) => setTimeout(r, 600));
    server = await start(port);
    const s = await run;
    expect(s.reconnects).toBeGreaterThanOrEqual(1);
    expect(s.lost).toBeGreaterThan(0);
    expect(s.sent + s.lost).toBe(150);
    expect(s.decoded).toBeGreaterThan(50);
    await server.close();
  }, 30_000);
});

describe('record client', () => {
  it('writes every received frame (PNG, .npy and timestamps) matching what the server decoded', async () => {
    const server = await start();
    const out = mkdtempSync(join(tmpdir(), 'cc-rec-'));
    // Each frame is sent once the recorder has the previous one: on a loaded machine a fixed pause could
    // let the server supersede a queued frame (latest wins), or send before the subscription is accepted.
    let received = 0;
    let next: (() => void) | undefined;
    const advance = (): void => next?.();
    const subscribed = new Promise<void>((resolve) => (next = resolve));
    const rec = record({ server: `http://127.0.0.1:${server.httpPort}`, out, stream: 'rec', model: 'ridge', npy: true, maxFrames: 10, onSubscribed: advance, onFrame: (n) => ((received = n), advance()) });
    await subscribed;
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const s = conn.openStream();
    const frames = Array.from({ length: 10 }, (_, k) => Float32Array.from({ length: 200 }, (_, i) => ((i * (k + 3)) % 17) / 4));
    for (let k = 0; k < 10; k++) {
      const got = new Promise<void>((resolve) => (next = resolve));
      s.send({ streamId: 'rec', model: 'ridge', sequence: k + 1, responses: frames[k] });
      await got;
      expect(received).toBe(k + 1);
    }
    const r = await rec;
    s.end();
    expect(r.frames).toBe(10);
    const index = readFileSync(join(out, 'frames.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { seq: number; file: string; t: { decodeEnd: number } });
    expect(index.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    expect(readdirSync(out).filter((f) => f.endsWith('.png'))).toHaveLength(10);
    // The recorded float output of frame 3 equals a fresh unary decode of the same responses.
    const direct = await conn.decode('ridge', frames[2]);
    const saved = readNpy(join(out, '000002.npy'));
    expect(saved.shape).toEqual([36, 64]);
    expect(Array.from(saved.data as Float32Array)).toEqual(Array.from(direct.values));
    const png = PNG.sync.read(readFileSync(join(out, index[2].file)));
    expect(png.width).toBe(64);
    expect(png.data[0]).toBe(direct.pixels[0]);
    conn.close();
    await server.close();
  });
});
