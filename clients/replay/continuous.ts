import { resizeArea } from '../../src/datasets/image-ops.js';
import type { ContinuousRecording } from '../../src/datasets/recording.js';
import { onsetFrame } from '../../src/datasets/trials.js';
import type { FrameAck } from '../lib/index.js';
import { RigStream } from './connection.js';
import { replayLedger, sleep, type ReplayStats } from './replay.js';

/**
 * Replay a continuous recording as a rig streams it: one imaging frame at a time at the recording's
 * own frame times (scaled by `speed`), each with what was on screen during that frame. Stimulus bytes
 * go out when the screen changes (a new presentation, or after a blank); frames during the same
 * presentation repeat only its image id, which the server reads as "unchanged". Frames between
 * presentations carry neither (a blank screen). Every frame's ack is counted, by status and drop reason.
 */
export interface ContinuousReplayOptions {
  server: string;
  model: string;
  /** 1 = the recording's own pace; 2 = twice as fast; 0 = as fast as the transport takes frames. */
  speed?: number;
  /** First imaging frame sent, and the frame to stop before. */
  start?: number;
  stop?: number;
  loop?: boolean;
  /** Stop after this many frames (all loops together). */
  maxFrames?: number;
  streamId?: string;
  token?: string;
  signal?: AbortSignal;
  onProgress?: (s: ContinuousReplayStats) => void;
  /** Each frame's final ack, with the index of the imaging frame it answers. */
  onAck?: (a: FrameAck, frame: number) => void;
  /** Stimulus size sent to viewers (default 64x36). */
  stimulusSize?: [width: number, height: number];
}

export interface ContinuousReplayStats extends ReplayStats {
  /** Frames that got their final ack (decoded + dropped + rejected). */
  acked: number;
  /** DROPPED acks by reason (window_filling, superseded, ...). */
  droppedBy: Record<string, number>;
  /** Frames that carried stimulus bytes (the rest repeated an image id, or showed nothing). */
  stimulusFrames: number;
  /** The pace frames were sent at, Hz (the recording's rate times speed; 0 when unpaced). */
  rateHz: number;
}

/**
 * Which presentation was on screen during each imaging frame (-1: none): from its onset frame (the
 * frame its start falls in, as trials cut from the recording count it) through the last frame that
 * starts before it stops. A later presentation takes over a frame it shares with an earlier one.
 */
export function presentationPerFrame(rec: Pick<ContinuousRecording, 'frames' | 'frameTimes' | 'rate' | 'presentations'>): Int32Array {
  const out = new Int32Array(rec.frames).fill(-1);
  rec.presentations.forEach((p, i) => {
    for (let t = Math.max(0, onsetFrame(rec.frameTimes, p.start, rec.rate)); t < rec.frames && rec.frameTimes[t] < p.stop; t++) out[t] = i;
  });
  return out;
}

export async function replayRecording(rec: ContinuousRecording, o: ContinuousReplayOptions): Promise<ContinuousReplayStats> {
  const speed = o.speed ?? 1;
  if (!(speed >= 0) || !Number.isFinite(speed)) throw new RangeError(`speed ${o.speed} must be a finite number >= 0`);
  const first = Math.max(0, o.start ?? 0);
  const end = Math.min(rec.frames, o.stop ?? rec.frames);
  if (end <= first) throw new RangeError(`frames ${first} .. ${end} of the recording (${rec.frames} frames) are empty`);
  const streamId = o.streamId ?? 'replay';
  const [sw, sh] = o.stimulusSize ?? [64, 36];
  const shownAt = presentationPerFrame(rec);
  const images = new Map<number, Uint8Array>();
  const imageOf = (template: number): Uint8Array => {
    let img = images.get(template);
    if (!img) {
      const t = rec.templates[template];
      images.set(template, (img = Uint8Array.from(resizeArea(t.image, t.height, t.width, sh, sw), (v) => Math.round(v))));
    }
    return img;
  };
  const ledger = replayLedger(false);
  const { jitter, t0 } = ledger;
  const stats: ContinuousReplayStats = Object.assign(ledger.stats, { acked: 0, droppedBy: {}, stimulusFrames: 0, rateHz: speed > 0 ? rec.rate * speed : 0 });
  const summary = (): ContinuousReplayStats => ({ ...stats, ...ledger.summary(), droppedBy: { ...stats.droppedBy } });
  /** Sequence -> imaging frame, for frames still waiting for their ack. */
  const pending = new Map<string, number>();
  const onAck = (a: FrameAck): void => {
    const key = String(a.sequence);
    const frame = pending.get(key);
    pending.delete(key);
    stats.acked++;
    if (a.status === 'DECODED') stats.decoded++;
    else if (a.status === 'DROPPED') {
      stats.dropped++;
      const reason = a.reason.split(':')[0] || 'unknown';
      stats.droppedBy[reason] = (stats.droppedBy[reason] ?? 0) + 1;
    } else if (a.status === 'REJECTED') {
      stats.rejected++;
      stats.lastReject = a.reason;
    }
    if (frame !== undefined) o.onAck?.(a, frame);
  };
  const rig = new RigStream(o.server, o.token, onAck, (why) => (stats.lastReject = why));
  /** The presentation whose bytes the server has for this stream (-1: none); a new call starts afresh. */
  let serverHas = -1;
  const periodS = (t: number): number => rec.frameTimes[t] - rec.frameTimes[first];
  let k = 0;
  outer: for (let pass = 0; ; pass++) {
    const passStart = pass * (periodS(end - 1) + 1 / rec.rate);
    for (let t = first; t < end; t++) {
      if (o.signal?.aborted || (o.maxFrames !== undefined && k >= o.maxFrames)) break outer;
      const due = speed > 0 ? t0 + ((passStart + periodS(t)) * 1000) / speed : 0;
      if (speed > 0) await sleep(due - performance.now(), o.signal);
      k++;
      const link = await rig.next(o.signal);
      if (link === 'down') {
        stats.lost++;
        continue;
      }
      if (link === 'reopened') {
        if (stats.sent > 0) stats.reconnects++;
        serverHas = -1;
      }
      if (speed > 0) jitter.push(performance.now() - due);
      const p = shownAt[t];
      const template = p >= 0 ? rec.presentations[p].template : -1;
      const imageId = template >= 0 ? rec.templates[template].imageId : 0;
      // Image id 0 cannot be told from "no id" on the wire: such an image goes with every frame.
      const withBytes = template >= 0 && (p !== serverHas || imageId === 0);
      serverHas = p;
      if (withBytes) stats.stimulusFrames++;
      pending.set(String(k), t);
      const ok = rig.stream!.send({
        streamId,
        model: o.model,
        sequence: k,
        responses: rec.traces.subarray(t * rec.units, (t + 1) * rec.units),
        imageId,
        stimulus: withBytes ? { width: sw, height: sh, pixels: imageOf(template) } : undefined,
      });
      stats.sent++;
      if (!ok && speed === 0) await rig.stream!.drained();
      if (o.onProgress && k % 30 === 0) o.onProgress(summary());
    }
    if (!o.loop) break;
  }
  await rig.finish(5000);
  return summary();
}
