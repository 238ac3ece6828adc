import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { subscribe, type FrameAck, type FrameMessage } from '../../clients/lib/index.js';
import { presentationPerFrame, replayRecording, type ContinuousReplayStats } from '../../clients/replay/continuous.js';
import { replay } from '../../clients/replay/replay.js';
import { readNwbRecording } from '../../src/datasets/nwb-read.js';
import type { ContinuousRecording } from '../../src/datasets/recording.js';
import { loadServerConfig } from '../../src/server/config.js';
import { CortexcastServer } from '../../src/server/server.js';
import { DEFAULT_CONTINUOUS, synthesizeContinuous } from '../../src/training/data/continuous-sim.js';
import { SYNTH_PRESETS } from '../../src/training/data/synth.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';

const UNITS = 80;

/** A recording built in memory: 30 Hz, stimuli 6 frames on and 3 off, templates with ids 11.. */
function recording(frames: number): ContinuousRecording {
  const rate = 30;
  const frameTimes = Float64Array.from({ length: frames }, (_, t) => 5 + t / rate);
  const templates = Array.from({ length: 4 }, (_, k) => ({
    image: Float32Array.from({ length: 36 * 64 }, (_, i) => (i * (k + 1) * 7) % 256),
    height: 36,
    width: 64,
    imageId: 11 + k,
  }));
  const presentations = [];
  // Onsets a third of a frame after a frame starts: the onset frame is the one the onset falls in.
  for (let start = 5 + 1 / 90; start + 0.2 < 5 + frames / rate; start += 0.3) presentations.push({ start, stop: start + 0.2, template: presentations.length % 4 });
  const traces = Float32Array.from({ length: frames * UNITS }, (_, i) => 0.5 + ((i * 2654435761) % 1000) / 500);
  return { traces, frames, units: UNITS, unitIds: Array.from({ length: UNITS }, (_, i) => i), frameTimes, rate, presentations, templates };
}

let bundle: string;
beforeAll(async () => {
  const data = await tinyDataset({}, UNITS);
  bundle = join(mkdtempSync(join(tmpdir(), 'cc-cr-')), 'ridge');
  await trainRidge({ data, out: bundle, quiet: true, log: () => undefined });
}, 120_000);

describe('presentationPerFrame', () => {
  it('names the presentation on screen during each frame; the frame a stimulus starts in carries it, blanks are -1', () => {
    const per = presentationPerFrame(recording(30));
    // Presentation 0 starts within frame 0 and stops within frame 6; presentation 1 starts within frame 9.
    expect(Array.from(per.slice(0, 12))).toEqual([0, 0, 0, 0, 0, 0, 0, -1, -1, 1, 1, 1]);
  });
});

describe('continuous replay through a real server', () => {
  it('streams every imaging frame at the recording pace, each gets exactly one final ack, and viewers get the stimulus the window answers', async () => {
    const window = { lengthFrames: 3, lagFrames: 2 };
    const server = await new CortexcastServer(
      loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'ridge', path: bundle, responseWindow: window }], shutdownGraceMs: 500 } }),
      () => undefined,
    ).start();
    const sub = subscribe(`http://127.0.0.1:${server.httpPort}`, { stream: 'rig' });
    await sub.hello;
    const published: FrameMessage[] = [];
    const collecting = (async () => {
      for await (const f of sub) published.push(f);
    })();
    const rec = recording(60);
    const acks = new Map<number, FrameAck[]>();
    const t0 = performance.now();
    const s = await replayRecording(rec, { server: `127.0.0.1:${server.grpcPort}`, model: 'ridge', streamId: 'rig', speed: 1, onAck: (a, frame) => acks.set(frame, [...(acks.get(frame) ?? []), a]) });
    const seconds = (performance.now() - t0) / 1000;
    // 60 frames at the recording's 30 Hz: about two seconds.
    expect(seconds).toBeGreaterThan(1.9);
    expect(seconds).toBeLessThan(6);
    expect(s.rateHz).toBe(30);
    expect(s.sent).toBe(60);
    expect(s.acked).toBe(60);
    expect([...acks.keys()].sort((a, b) => a - b)).toEqual(Array.from({ length: 60 }, (_, t) => t));
    for (const list of acks.values()) expect(list).toHaveLength(1);
    // The first lengthFrames - 1 frames fill the window; the rest decode unless a newer frame superseded
    // them (latest wins: on a loaded machine a decode can take longer than a frame).
    expect(acks.get(0)![0].reason).toMatch(/^window_filling/);
    expect(acks.get(1)![0].reason).toMatch(/^window_filling/);
    expect(s.droppedBy.window_filling).toBe(2);
    expect(s.decoded + (s.droppedBy.superseded ?? 0)).toBe(58);
    expect(s.decoded).toBeGreaterThan(20);
    expect(s.rejected).toBe(0);
    // Stimulus bytes went out once per presentation, not with every frame.
    expect(s.stimulusFrames).toBe(rec.presentations.filter((p) => p.start < rec.frameTimes[59] + 1 / 30).length);
    // Each decoded frame is published before its ack is written, but over another connection.
    for (let i = 0; i < 100 && published.length < s.decoded; i++) await new Promise((r) => setTimeout(r, 50));
    sub.close();
    await collecting;
    expect(published.length).toBe(s.decoded);
    const per = presentationPerFrame(rec);
    const back = window.lengthFrames + window.lagFrames - 1;
    for (const f of published) {
      const frame = Number(f.seq) - 1;
      const p = frame - back >= 0 ? per[frame - back] : -1;
      const template = p >= 0 ? rec.templates[rec.presentations[p].template] : undefined;
      expect(f.imageId ?? 0).toBe(template?.imageId ?? 0);
      if (template) expect(f.stimulus?.pixels.length).toBe(64 * 36);
      else expect(f.stimulus ?? undefined).toBeUndefined();
    }
    await server.close();
  }, 60_000);
});

describe('replay --data FILE.nwb', () => {
  it('streams the NWB recording frame by frame through StreamFrames, one ack per frame; --protocol v2 replays its trials instead', async () => {
    const base = SYNTH_PRESETS.tiny;
    const nwb = join(mkdtempSync(join(tmpdir(), 'cc-cr-nwb-')), 'session.nwb');
    await synthesizeContinuous(nwb, { ...base, trainTrials: 12, validationTrials: 2, testImages: 2, repeats: 2, simulator: { ...base.simulator, neurons: UNITS } }, DEFAULT_CONTINUOUS, { quiet: true });
    const server = await new CortexcastServer(
      loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'ridge', path: bundle, responseWindow: { lengthFrames: 4, lagFrames: 2 } }], shutdownGraceMs: 500 } }),
      () => undefined,
    ).start();
    try {
      const s = (await replay({ data: nwb, server: `127.0.0.1:${server.grpcPort}`, model: 'ridge', speed: 0, maxFrames: 150 })) as ContinuousReplayStats;
      expect(s.sent).toBe(150);
      expect(s.acked).toBe(150);
      expect(s.rejected).toBe(0);
      expect(s.droppedBy.window_filling).toBe(3);
      expect(s.decoded + (s.droppedBy.superseded ?? 0)).toBe(147);
      expect(s.decoded).toBeGreaterThan(0);
      // Each presentation sends its image once, on its first frame; an image whose id is 0 (no id on
      // the wire) goes with every frame it is shown.
      const rec = readNwbRecording(nwb);
      const per = presentationPerFrame(rec).subarray(0, 150);
      const idOf = (p: number): number => rec.templates[rec.presentations[p].template].imageId;
      const onsets = new Set([...per].filter((p) => p >= 0 && idOf(p) !== 0)).size;
      const idZeroFrames = [...per].filter((p) => p >= 0 && idOf(p) === 0).length;
      expect(onsets).toBeGreaterThan(1);
      expect(s.stimulusFrames).toBe(onsets + idZeroFrames);
      expect(s.stimulusFrames).toBeLessThan([...per].filter((p) => p >= 0).length);
      // ModelInfer has no stream and so no window: the test tier's trials, one request each.
      const v2 = await replay({ data: nwb, server: `127.0.0.1:${server.grpcPort}`, model: 'ridge', protocol: 'v2', rate: 0 });
      expect(v2.rejected).toBe(0);
      expect(v2.decoded).toBe(v2.sent);
      expect(v2.sent).toBeGreaterThan(0);
      expect(v2.sent).toBeLessThan(10);
    } finally {
      await server.close();
    }
  }, 60_000);
});

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
if (!CHROMIUM) console.warn('SKIPPED: continuous viewer check - chromium is not installed (apt-get install chromium)');

describe.skipIf(!CHROMIUM)('viewer on a continuous stream (headless Chromium)', () => {
  it('shows beside each reconstruction the stimulus its window answers, says how far back, and blanks it for a blank screen', async () => {
    const window = { lengthFrames: 3, lagFrames: 1 };
    const server = await new CortexcastServer(
      loadServerConfig({ flags: { grpcPort: 0, httpPort: 0, models: [{ name: 'ridge', path: bundle, responseWindow: window }], shutdownGraceMs: 500 } }),
      () => undefined,
    ).start();
    const ac = new AbortController();
    const streaming = replayRecording(recording(90), { server: `127.0.0.1:${server.grpcPort}`, model: 'ridge', streamId: 'rig', speed: 1, loop: true, signal: ac.signal });
    const { chromium } = await import('playwright-core');
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'] });
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 560 } });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`http://127.0.0.1:${server.httpPort}/?model=ridge`);
      await page.waitForFunction(() => document.getElementById('window')!.textContent === 'mean of the last 3 frames', undefined, { timeout: 20_000 });
      // Caption, image id and the stimulus canvas's grey-level spread (0 when blanked), read in one
      // task of the page, so all three belong to the same decoded frame.
      const read = (): Promise<[string, string, number]> =>
        page.evaluate(() => {
          const c = document.getElementById('stimulus') as HTMLCanvasElement;
          const d = c.getContext('2d')!.getImageData(0, 0, c.width, c.height).data;
          let lo = 255;
          let hi = 0;
          for (let i = 0; i < d.length; i += 4) {
            lo = Math.min(lo, d[i]);
            hi = Math.max(hi, d[i]);
          }
          return [document.getElementById('shownWhen')!.textContent ?? '', document.getElementById('imageId')!.textContent ?? '', hi - lo];
        });
      const seen = { shown: false, blank: false };
      for (let i = 0; i < 80 && !(seen.shown && seen.blank); i++) {
        const [caption, id, s] = await read();
        if (caption === 'on screen 3 frames before' && /^#1[1-4]$/.test(id ?? '') && s > 20) seen.shown = true;
        if (caption === '(blank screen 3 frames before)' && id === '' && s === 0) seen.blank = true;
        await page.waitForTimeout(50);
      }
      expect(seen).toEqual({ shown: true, blank: true });
      expect(errors).toEqual([]);
    } finally {
      await browser.close();
      ac.abort();
      await streaming;
      await server.close();
    }
  }, 60_000);
});
