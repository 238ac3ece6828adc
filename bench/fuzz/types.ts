import type fc from 'fast-check';

/**
 * What every fuzzed surface shares. Inputs are plain JSON (bytes as base64 strings) so that a failing
 * one can be written to test/server/fuzz-regressions/ and replayed as it was.
 */

/** The server under test, as a surface sees it. */
export interface FuzzTarget {
  grpcPort: number;
  httpPort: number;
  /** The token the server is configured with (inputs choose whether to send it). */
  token: string;
  model: string;
  neurons: number;
  /** The model's unit ids, in its order (frames may send them on their first message). */
  unitIds: number[];
  /** The server process has not exited. */
  alive: () => boolean;
  /** Accepted-frame counters from /metrics (received, decoded, dropped), summed over labels. */
  counters: () => Promise<FrameCounters>;
}

export interface FrameCounters {
  received: number;
  decoded: number;
  dropped: number;
  /** Gauges at the same scrape: open ingest calls, frames queued, busy workers (all 0 when the server is idle). */
  streams: number;
  queued: number;
  busy: number;
}

/**
 * Wait until no ingest call is open and no frame is queued or decoding, so that what an input does
 * to the counters is not mixed with the tail of the one before. Returns the counters then.
 */
export async function quiescent(t: FuzzTarget, ms = 5000): Promise<FrameCounters> {
  let c = await t.counters();
  const idle = (x: FrameCounters): boolean => x.streams === 0 && x.queued === 0 && x.busy === 0;
  if (!idle(c))
    await until(async () => {
      c = await t.counters();
      return idle(c);
    }, ms, 25);
  return c;
}

/** What one input did to the server: nothing wrong, or why the property fails. */
export interface Outcome {
  /** Unanswered past its deadline: what was waited for. */
  hang?: string;
  /** Accepted frames without exactly one final ack (DECODED or DROPPED). */
  unaccounted?: number;
  /** Free text for the report (status seen, bytes received, ...). */
  note?: string;
}

export interface Surface<I> {
  name: string;
  /** One line for the report and the guide. */
  what: string;
  arbitrary: (t: FuzzTarget) => fc.Arbitrary<I>;
  run: (input: I, t: FuzzTarget) => Promise<Outcome>;
}

/** A failing input as kept in test/server/fuzz-regressions/<surface>-<hash>.json. */
export interface KeptInput {
  surface: string;
  finding: 'crash' | 'hang' | 'unaccounted';
  /** What was observed when it was found (exit status, what went unanswered, counts). */
  symptom: string;
  /** fast-check's seed and path of the run that found it (replay with `--seed`). */
  seed: number;
  path?: string;
  shrunk: boolean;
  /** How often the kept input failed again right after it was found (e.g. "2/3"): some failures depend on timing. */
  reproduced?: string;
  input: unknown;
}

export const b64 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64');
export const unb64 = (s: string): Buffer => Buffer.from(s, 'base64');

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Poll until cond() or ms pass; true when cond() held. */
export async function until(cond: () => boolean | Promise<boolean>, ms: number, everyMs = 20): Promise<boolean> {
  const t0 = Date.now();
  for (;;) {
    if (await cond()) return true;
    if (Date.now() - t0 >= ms) return false;
    await sleep(everyMs);
  }
}

/**
 * Per-input deadlines. The server's own timers in the fuzz configuration (request 1 s, handshake
 * 1 s, idle stream 2 s) are well inside them; the rest is slack for a loaded machine.
 */
export const DEADLINE_MS = 10_000;
