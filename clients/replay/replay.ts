import { percentile } from '../../src/common/stats.js';
import { resizeArea } from '../../src/datasets/image-ops.js';
import { SensoriumDataset } from '../../src/datasets/sensorium.js';
import { isNwbPath, loadNwbSupport, openDataset } from '../../src/datasets/dataset-source.js';
import type { NwbReadOptions } from '../../src/datasets/nwb-read.js';
import { InferenceV2Connection, type FrameAck } from '../lib/index.js';
import { RigStream, sleep } from './connection.js';

/**
 * Replay a recorded (or simulated) session to a cortexcast server in real time: one tier's trials in
 * session order, each frame stamped at its due time, with the stimulus attached so viewers can show and
 * score it. Reconnects with exponential backoff when the server goes away and resumes at the next
 * frame; frames whose time passed while disconnected are counted as lost, not sent late.
 */
export interface ReplayOptions {
  /** A dataset folder (trials), or an NWB file: streamed one imaging frame at a time (continuous.ts). */
  data: string;
  server: string;
  model: string;
  tier?: string;
  /** Frames per second; 0 = as fast as the transport takes them. */
  rate?: number;
  loop?: boolean;
  start?: number;
  stop?: number;
  streamId?: string;
  token?: string;
  /** Stop after this many frames (all loops together). */
  maxFrames?: number;
  signal?: AbortSignal;
  onProgress?: (s: ReplayStats) => void;
  /** Stimulus size sent to viewers (default 64x36). */
  stimulusSize?: [width: number, height: number];
  /**
   * 'cortexcast': StreamFrames (acks, WebSocket fan-out to viewers). 'v2': one Open Inference
   * Protocol ModelInfer per frame, so the same replay drives a Triton or KServe deployment of an
   * exported model (`export triton`); images come back to the caller, not to viewers.
   */
  protocol?: 'cortexcast' | 'v2';
  /** v2: requests in flight at once; a frame due while all are busy is dropped (latest wins). */
  maxInFlight?: number;
  /** NWB files: playback speed against the recording's own frame times (0 = unpaced); `rate` is ignored. */
  speed?: number;
  /** NWB files: which series, presentations and templates to read (when the file holds several). */
  nwb?: NwbReadOptions;
}

export interface ReplayStats {
  sent: number;
  decoded: number;
  dropped: number;
  rejected: number;
  /** Frames skipped because the server was unreachable when they were due. */
  lost: number;
  reconnects: number;
  /** Send-time error against the schedule, ms. */
  jitterP50: number;
  jitterP99: number;
  jitterMax: number;
  elapsedS: number;
  lastReject?: string;
  /** v2: request round trip, ms. */
  rttP50?: number;
  rttP99?: number;
}

const pct = (v: number[], p: number): number => (v.length ? percentile(v, p) : 0);
export { sleep };

/** The dataset and the trials of its tier that this replay sends, in session order. */
function openTier(o: ReplayOptions): { ds: SensoriumDataset; trials: number[] } {
  const ds = openDataset(o.data);
  const tier = o.tier ?? 'test';
  const all = ds.indices(tier);
  if (!all.length) throw new Error(`tier '${tier}' of ${o.data} has no trials`);
  return { ds, trials: all.slice(o.start ?? 0, o.stop ?? all.length) };
}

export async function replay(o: ReplayOptions): Promise<ReplayStats> {
  // An NWB recording streams as a rig sends it, frame by frame; over the Open Inference Protocol,
  // which has no streams (and so no response window), its trials are replayed instead.
  if (isNwbPath(o.data)) await loadNwbSupport();
  if (isNwbPath(o.data) && o.protocol !== 'v2') {
    const [{ readNwbRecording }, { replayRecording }] = await Promise.all([import('../../src/datasets/nwb-read.js'), import('./continuous.js')]);
    return replayRecording(readNwbRecording(o.data, o.nwb), o);
  }
  if (o.protocol === 'v2') return replayV2(o);
  const { ds, trials } = openTier(o);
  const rate = o.rate ?? 30;
  const streamId = o.streamId ?? 'replay';
  const [sw, sh] = o.stimulusSize ?? [64, 36];
  const { stats, jitter, t0, summary } = replayLedger(false);
  const onAck = (a: FrameAck): void => {
    if (a.status === 'DECODED') stats.decoded++;
    else if (a.status === 'DROPPED') stats.dropped++;
    else if (a.status === 'REJECTED') {
      stats.rejected++;
      stats.lastReject = a.reason;
    }
  };
  const rig = new RigStream(o.server, o.token, onAck, (why) => (stats.lastReject = why));
  const period = rate > 0 ? 1000 / rate : 0;
  let k = 0;
  outer: for (let pass = 0; ; pass++) {
    for (const i of trials) {
      if (o.signal?.aborted || (o.maxFrames !== undefined && k >= o.maxFrames)) break outer;
      const due = t0 + k * period;
      const t = ds.trial(i);
      const stimulus = { width: sw, height: sh, pixels: Uint8Array.from(resizeArea(t.image, ds.imageShape[0], ds.imageShape[1], sh, sw), (v) => Math.round(v)) };
      await sleep(due - performance.now(), o.signal);
      k++;
      const link = await rig.next(o.signal);
      if (link === 'down') {
        stats.lost++;
        continue;
      }
      if (link === 'reopened' && stats.sent > 0) stats.reconnects++;
      if (period) jitter.push(performance.now() - due);
      const ok = rig.stream!.send({ streamId, model: o.model, sequence: k, responses: t.responses, imageId: t.imageId, stimulus });
      stats.sent++;
      if (!ok && rate === 0) await rig.stream!.drained();
      if (o.onProgress && k % 30 === 0) o.onProgress(summary());
    }
    if (!o.loop) break;
  }
  await rig.finish(2000);
  return summary();
}

/** One replay's counters, send jitter and (v2) round trips; `t0` is its schedule's origin. */
export function replayLedger(roundTrips: boolean): { stats: ReplayStats; jitter: number[]; rtt: number[]; t0: number; summary: () => ReplayStats } {
  const stats: ReplayStats = { sent: 0, decoded: 0, dropped: 0, rejected: 0, lost: 0, reconnects: 0, jitterP50: 0, jitterP99: 0, jitterMax: 0, elapsedS: 0 };
  const jitter: number[] = [];
  const rtt: number[] = [];
  const t0 = performance.now();
  const summary = (): ReplayStats => ({
    ...stats,
    jitterP50: pct(jitter, 50),
    jitterP99: pct(jitter, 99),
    jitterMax: jitter.length ? Math.max(...jitter) : 0,
    elapsedS: (performance.now() - t0) / 1000,
    ...(roundTrips ? { rttP50: pct(rtt, 50), rttP99: pct(rtt, 99) } : {}),
  });
  return { stats, jitter, rtt, t0, summary };
}

/** One ModelInfer per due frame; at most maxInFlight outstanding, a frame due beyond that is dropped. */
async function replayV2(o: ReplayOptions): Promise<ReplayStats> {
  const { ds, trials } = openTier(o);
  const rate = o.rate ?? 30;
  const period = rate > 0 ? 1000 / rate : 0;
  const maxInFlight = o.maxInFlight ?? 4;
  const conn = new InferenceV2Connection(o.server, { token: o.token });
  const inFlight = new Set<Promise<void>>();
  const { stats, jitter, rtt, t0, summary } = replayLedger(true);
  let k = 0;
  outer: for (;;) {
    for (const i of trials) {
      if (o.signal?.aborted || (o.maxFrames !== undefined && k >= o.maxFrames)) break outer;
      const due = t0 + k * period;
      const responses = ds.trial(i).responses;
      await sleep(due - performance.now(), o.signal);
      k++;
      if (inFlight.size >= maxInFlight) {
        if (rate === 0) await Promise.race(inFlight);
        else {
          stats.dropped++;
          continue;
        }
      }
      if (period) jitter.push(performance.now() - due);
      const sentAt = performance.now();
      stats.sent++;
      const p: Promise<void> = conn
        .infer(o.model, [responses], { id: String(k), timeoutMs: 5000 })
        .then(
          () => {
            stats.decoded++;
            rtt.push(performance.now() - sentAt);
          },
          (e: { code?: number; details?: string; message?: string }) => {
            // INVALID_ARGUMENT, NOT_FOUND: the frame or model is wrong; anything else: not decoded.
            if (e.code === 3 || e.code === 5) {
              stats.rejected++;
              stats.lastReject = e.details ?? e.message;
            } else if (e.code === 14) stats.lost++;
            else stats.dropped++;
          },
        )
        .finally(() => inFlight.delete(p));
      inFlight.add(p);
      if (o.onProgress && k % 30 === 0) o.onProgress(summary());
    }
    if (!o.loop) break;
  }
  await Promise.all(inFlight);
  conn.close();
  return summary();
}
