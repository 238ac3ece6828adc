import fc from 'fast-check';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { DecoderConnection, subscribe, type FrameAck, type FrameMessage } from '../../clients/lib/index.js';
import { CortexcastError } from '../../src/common/errors.js';
import { loadServerConfig } from '../../src/server/config.js';
import { resolveWindow, StreamWindow } from '../../src/server/response-window.js';
import { CortexcastServer } from '../../src/server/server.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

/** Mean of frames[from .. to] (inclusive), computed the plain way. */
function meanOf(frames: Float32Array[], from: number, to: number): Float64Array {
  const out = new Float64Array(frames[0].length);
  for (let t = from; t <= to; t++) for (let i = 0; i < out.length; i++) out[i] += frames[t][i] / (to - from + 1);
  return out;
}

const stim = (v: number): { width: number; height: number; pixels: Uint8Array } => ({ width: 2, height: 1, pixels: Uint8Array.of(v, v) });

describe('response window arithmetic', () => {
  it('decodes the mean of the newest lengthFrames frames, through many ring wraps, and drops while filling', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 7 }),
        fc.integer({ min: 0, max: 5 }),
        fc.integer({ min: 1, max: 5 }),
        fc.array(fc.float({ min: -1000, max: 1000, noNaN: true }), { minLength: 5, maxLength: 5 * 40 }),
        (length, lag, units, values) => {
          const count = Math.floor(values.length / units);
          if (count === 0) return;
          const frames = Array.from({ length: count }, (_, t) => Float32Array.from(values.slice(t * units, (t + 1) * units)));
          const w = new StreamWindow('m', units, { lengthFrames: length, lagFrames: lag });
          frames.forEach((f, t) => {
            const step = w.push(f, undefined, undefined);
            if (t < length - 1) {
              expect(step).toEqual({ kind: 'filling', have: t + 1, need: length });
              return;
            }
            if (step.kind !== 'ready') throw new Error(`frame ${t} should decode`);
            const want = meanOf(frames, t - length + 1, t);
            for (let i = 0; i < units; i++) expect(step.responses[i]).toBeCloseTo(want[i], 2);
          });
        },
      ),
      { numRuns: 200 },
    );
  });

  it('stays exact over a long stream (the running sum does not drift)', () => {
    const units = 3;
    const w = new StreamWindow('m', units, { lengthFrames: 4, lagFrames: 0 });
    const frames: Float32Array[] = [];
    let last;
    for (let t = 0; t < 50_000; t++) {
      const f = Float32Array.from({ length: units }, (_, i) => Math.fround(Math.sin(t * 0.37 + i) * 1e3 + (t % 7) * 1e-3));
      frames.push(f);
      last = w.push(f, undefined, undefined);
    }
    if (last?.kind !== 'ready') throw new Error('should decode');
    const want = meanOf(frames, frames.length - 4, frames.length - 1);
    for (let i = 0; i < units; i++) expect(Math.abs(last.responses[i] - want[i])).toBeLessThan(1e-4);
  });

  it('attributes each decoded window to the stimulus shown lagFrames + lengthFrames - 1 frames earlier', () => {
    for (const [length, lag] of [
      [1, 0],
      [1, 3],
      [4, 0],
      [3, 2],
      [5, 7],
    ]) {
      const w = new StreamWindow('m', 1, { lengthFrames: length, lagFrames: lag });
      const back = length + lag - 1;
      for (let t = 0; t < 40; t++) {
        // Every frame shows its own image (id t + 1), so the attribution names the frame exactly.
        const step = w.push(Float32Array.of(t), t + 1, stim(t));
        if (step.kind !== 'ready') continue;
        if (t < back) expect(step.screen).toBeUndefined();
        else {
          expect(step.screen?.imageId).toBe(t - back + 1);
          expect(step.screen?.stimulus?.pixels[0]).toBe(t - back);
        }
      }
    }
  });

  it('keeps the stimulus while frames repeat its image id without bytes; no id is a blank screen', () => {
    const w = new StreamWindow('m', 1, { lengthFrames: 1, lagFrames: 0 });
    const screenAt = (id: number | undefined, s?: ReturnType<typeof stim>): unknown => {
      const step = w.push(Float32Array.of(0), id, s);
      return step.kind === 'ready' ? step.screen : 'filling';
    };
    expect(screenAt(7, stim(70))).toEqual({ imageId: 7, stimulus: stim(70) });
    expect(screenAt(7)).toEqual({ imageId: 7, stimulus: stim(70) });
    expect(screenAt(undefined)).toBeUndefined();
    expect(screenAt(7)).toEqual({ imageId: 7 });
    expect(screenAt(8)).toEqual({ imageId: 8 });
  });

  it('a window of one hands the frame on as it came (trial-level streams are unchanged)', () => {
    const w = new StreamWindow('m', 3, { lengthFrames: 1, lagFrames: 0 });
    const f = Float32Array.of(1, 2, 3);
    const step = w.push(f, 5, undefined);
    expect(step.kind === 'ready' && step.responses).toBe(f);
  });

  it('the config overrides the manifest, the manifest overrides the default of one frame; out-of-range windows are refused', () => {
    expect(resolveWindow(undefined, undefined, 'b')).toEqual({ lengthFrames: 1, lagFrames: 0, source: 'default' });
    expect(resolveWindow(undefined, { lengthFrames: 6, lagFrames: 2, rateHz: 30 }, 'b')).toEqual({ lengthFrames: 6, lagFrames: 2, rateHz: 30, source: 'manifest' });
    expect(resolveWindow({ lengthFrames: 3, lagFrames: 1 }, { lengthFrames: 6, lagFrames: 2, rateHz: 30 }, 'b')).toEqual({ lengthFrames: 3, lagFrames: 1, rateHz: 30, source: 'config' });
    expect(() => resolveWindow(undefined, { lengthFrames: 500, lagFrames: 0 }, 'b')).toThrow(/CC_ERR_BUNDLE.*500 frames/);
    expect(() => loadServerConfig({ flags: { models: [{ path: 'x', responseWindow: { lengthFrames: 0, lagFrames: 0 } }] } })).toThrow(CortexcastError);
  });
});

describe('response window in a running server', () => {
  let bundle: string;
  const units = 60;
  beforeAll(async () => {
    const data = await tinyDataset({}, units);
    bundle = join(mkdtempSync(join(tmpdir(), 'cc-rw-')), 'ridge');
    await trainRidge({ data, out: bundle, quiet: true, log: () => undefined });
    // The decoder as if trained on 3-frame windows 2 frames after onset.
    const manifestPath = join(bundle, 'manifest.json');
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as Record<string, unknown>;
    writeFileSync(manifestPath, JSON.stringify({ ...manifest, responseWindow: { lengthFrames: 3, lagFrames: 2, rateHz: 30 } }, null, 2));
  }, 120_000);

  /** Streams `frames` one at a time (each after the previous ack) and collects acks and decoded frames. */
  async function stream(responseWindow: { lengthFrames: number; lagFrames: number } | undefined, frames: Float32Array[]) {
    const server = await new CortexcastServer(loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'ridge', path: bundle, ...(responseWindow ? { responseWindow } : {}) }], shutdownGraceMs: 500 } }), () => undefined).start();
    const facts = (await (await fetch(`http://127.0.0.1:${server.httpPort}/api/models`)).json()) as { models: { responseWindow: unknown }[] };
    const sub = subscribe(`http://127.0.0.1:${server.httpPort}`, { float: true });
    await sub.hello;
    const decoded: FrameMessage[] = [];
    const collecting = (async () => {
      for await (const f of sub) decoded.push(f);
    })();
    const conn = new DecoderConnection(`127.0.0.1:${server.grpcPort}`);
    const acks: FrameAck[] = [];
    let next: (() => void) | undefined;
    const s = conn.openStream((a) => (acks.push(a), next?.()));
    for (let k = 0; k < frames.length; k++) {
      const got = new Promise<void>((r) => (next = r));
      s.send({ streamId: 'rig', model: 'ridge', sequence: k + 1, responses: frames[k], imageId: 100 + k, stimulus: stim(k) });
      await got;
    }
    s.end();
    await s.done;
    // Each decoded frame is published before its ack is written, but over another connection.
    const want = acks.filter((a) => a.status === 'DECODED').length;
    for (let i = 0; i < 100 && decoded.length < want; i++) await new Promise((r) => setTimeout(r, 50));
    const direct = async (r: Float32Array): Promise<Float32Array> => (await conn.decode('ridge', r)).values;
    const result = { facts: facts.models[0].responseWindow, acks, decoded, direct };
    return {
      ...result,
      close: async () => {
        sub.close();
        await collecting;
        conn.close();
        await server.close();
      },
    };
  }

  const frames = Array.from({ length: 9 }, (_, k) => Float32Array.from({ length: units }, (_, i) => 0.2 + ((i * (k + 3)) % 11) / 5));

  it('defaults to the manifest window: partial windows are DROPPED window_filling, full ones decode the mean and name the stimulus of lag + length - 1 frames before', async () => {
    const r = await stream(undefined, frames);
    expect(r.facts).toEqual({ lengthFrames: 3, lagFrames: 2, rateHz: 30, source: 'manifest' });
    expect(r.acks.map((a) => a.status)).toEqual(['DROPPED', 'DROPPED', ...Array(7).fill('DECODED')]);
    expect(r.acks[0].reason).toMatch(/^window_filling: 1 of the 3 frames/);
    expect(r.decoded.map((f) => Number(f.seq))).toEqual([3, 4, 5, 6, 7, 8, 9]);
    // Frame 3 (index 2) answers index -2: before the stream began, so no stimulus; frame 5 answers index 0.
    expect(r.decoded.map((f) => f.imageId ?? 0)).toEqual([0, 0, 100, 101, 102, 103, 104]);
    expect(r.decoded[2].stimulus?.pixels[0]).toBe(0);
    const last = r.decoded[6];
    const mean = Float32Array.from(meanOf(frames, 6, 8));
    const want = await r.direct(mean);
    for (let i = 0; i < want.length; i += 97) expect(last.values![i]).toBeCloseTo(want[i], 4);
    await r.close();
  }, 60_000);

  it('a config override wins over the manifest (a window of one decodes every frame as sent)', async () => {
    const r = await stream({ lengthFrames: 1, lagFrames: 0 }, frames.slice(0, 4));
    expect(r.facts).toEqual({ lengthFrames: 1, lagFrames: 0, rateHz: 30, source: 'config' });
    expect(r.acks.map((a) => a.status)).toEqual(['DECODED', 'DECODED', 'DECODED', 'DECODED']);
    expect(r.decoded.map((f) => f.imageId)).toEqual([100, 101, 102, 103]);
    const want = await r.direct(frames[3]);
    expect(Array.from(r.decoded[3].values!)).toEqual(Array.from(want));
    await r.close();
  }, 60_000);
});
