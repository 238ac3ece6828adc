import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runStream, type StreamInput } from '../../bench/fuzz/grpc-stream.js';
import { startServer, type ServerProcess } from '../../bench/fuzz/server.js';
import { keptInputs, replay, SURFACES } from '../../bench/fuzz/surfaces.js';
import { trainRidge } from '../../src/training/ridge/train-ridge.js';
import { tinyDataset } from '../helpers/tiny-dataset.js';
import { closeRawGrpc } from '../../bench/fuzz/wire.js';

/**
 * Every input `npm run bench:fuzz` kept in test/server/fuzz-regressions/ (one JSON file per failing
 * input: surface, finding, symptom, seed, the input itself) replayed against `cortexcast serve` run
 * as a child process with the fuzzer's configuration, so that a crash is an exit. Each must be
 * answered before its deadline, leave no accepted frame without exactly one final ack, and leave the
 * process alive.
 */
const kept = keptInputs();
let bundle: string;
let work: string;
let server: ServerProcess;

/** The server for the next replay: the one running, or a new one when the last input ended it. */
async function live(): Promise<ServerProcess> {
  if (!server || server.exit) server = await startServer(bundle, work);
  return server;
}

beforeAll(async () => {
  // The fuzzer's model: ridge on the tiny preset (300 neurons), so inputs sized by neuron count replay as found.
  const data = await tinyDataset({}, 300);
  work = mkdtempSync(join(tmpdir(), 'cc-fuzzreg-'));
  bundle = join(work, 'ridge');
  await trainRidge({ data, out: bundle, quiet: true, log: () => undefined });
  await live();
}, 120_000);

afterAll(async () => {
  closeRawGrpc();
  await server?.stop();
  rmSync(work, { recursive: true, force: true });
});

describe('kept fuzz inputs', () => {
  it('every kept file names a known surface and holds an input', () => {
    const names = new Set(SURFACES.map((s) => s.name));
    for (const { file, kept: k } of kept) {
      expect(names.has(k.surface), `${file}: surface ${k.surface}`).toBe(true);
      expect(file.startsWith(`${k.surface}-`), file).toBe(true);
      expect(['crash', 'hang', 'unaccounted']).toContain(k.finding);
      expect(k.input, file).toBeTypeOf('object');
    }
  });

  it('the replay oracle passes a well-formed stream and sees every frame acked', async () => {
    const s = await live();
    const frame = { streamId: 'rig-a', model: 'ok' as const, sequence: 'next', acquiredAtUs: 'now', countDelta: 0, tailBytes: 0, nonFinite: [], unitIds: 'none' as const, imageId: '0', stimulus: null };
    const bad = { ...frame, countDelta: 1 };
    const input: StreamInput = {
      metadata: { auth: 'good', extra: [] },
      messages: [frame, frame, bad, frame].map((f) => ({ kind: 'frame' as const, frame: f, mutation: { kind: 'none' as const } })),
      end: 'half-close',
    };
    const out = await runStream(input, s.target);
    expect(out).toEqual({ note: 'status OK; 4 final acks for 4 messages' });
  });

  for (const { file, kept: k } of kept)
    it(`${file}: ${k.finding} (${k.symptom.slice(0, 100)})`, async () => {
      const out = await replay(k, (await live()).target);
      expect(out.alive, `the server process exited: ${server.stderrTail.slice(-3).join(' | ')}`).toBe(true);
      expect(out.hang ?? 'answered before its deadline').toBe('answered before its deadline');
      expect(out.unaccounted ?? 0, `frames without exactly one final ack (${out.note})`).toBe(0);
    });
});
