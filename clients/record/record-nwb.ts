import { createHash } from 'node:crypto';
import { NwbWriter } from '../../src/datasets/nwb-write.js';
import { subscribe, type FrameMessage, type HelloMessage } from '../lib/index.js';

/**
 * Record a live session into one NWB file: per stream and model, the decoded frames as an
 * ImageSeries and the stimuli shown as an IndexSeries into an Images container of templates (one
 * per distinct stimulus); every frame's latency stages in a DynamicTable (/analysis/latency); the
 * served models (name, manifest summary, response window) in /analysis/served_models and, as JSON,
 * in /general/notes. Frames are held in memory (at most MAX_NWB_FRAMES) and written when the
 * recording ends (frame limit, Ctrl-C, or the server closing), atomically.
 */
export const MAX_NWB_FRAMES = 108_000;

export interface RecordNwbOptions {
  server: string;
  file: string;
  stream?: string;
  model?: string;
  token?: string;
  maxFrames?: number;
  signal?: AbortSignal;
  onSubscribed?: (hello: HelloMessage) => void;
  onFrame?: (n: number, f: FrameMessage) => void;
}

interface ServedModel {
  name: string;
  kind?: string;
  neurons?: number;
  width?: number;
  height?: number;
  provider?: string;
  metrics?: Record<string, number>;
  responseWindow?: { lengthFrames: number; lagFrames: number; rateHz?: number; source?: string };
}

interface Track {
  stream: string;
  model: string;
  width: number;
  height: number;
  pixels: Uint8Array[];
  times: number[];
  stimulusIndex: number[];
  stimulusTimes: number[];
}

/** The served models as /api/models describes them (the hello's shorter list if that fails). */
async function servedModels(server: string, token: string | undefined, hello: HelloMessage): Promise<ServedModel[]> {
  try {
    const res = await fetch(new URL('/api/models', server), { headers: token ? { authorization: `Bearer ${token}` } : {} });
    if (res.ok) return ((await res.json()) as { models: ServedModel[] }).models;
  } catch {
    // Fall through: the hello names the models too.
  }
  return hello.models;
}

const nwbName = (s: string): string => s.replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 64) || '_';

export async function recordNwb(o: RecordNwbOptions): Promise<{ frames: number; file: string }> {
  const limit = Math.min(o.maxFrames ?? MAX_NWB_FRAMES, MAX_NWB_FRAMES);
  const sub = subscribe(o.server, { stream: o.stream, model: o.model, token: o.token });
  const hello = await sub.hello;
  o.onSubscribed?.(hello);
  o.signal?.addEventListener('abort', () => sub.close(), { once: true });
  const models = await servedModels(o.server, o.token, hello);
  const start = Date.now();
  const tracks = new Map<string, Track>();
  // Stimuli per stream: the template index of each distinct image (by image id, else by content).
  const templates = new Map<string, { keys: Map<string, number>; images: { pixels: Uint8Array; width: number; height: number }[] }>();
  const rows: { stream: string; model: string; seq: number; imageId: number; t: FrameMessage['t']; received: number }[] = [];
  for await (const f of sub) {
    const key = `${f.stream}\u0000${f.model}`;
    let track = tracks.get(key);
    if (!track) tracks.set(key, (track = { stream: f.stream, model: f.model, width: f.width, height: f.height, pixels: [], times: [], stimulusIndex: [], stimulusTimes: [] }));
    // A model's frames share one size; a frame of another size (the model was replaced) is not mixed in.
    if (f.width !== track.width || f.height !== track.height) continue;
    const time = (f.received - start) / 1000;
    track.pixels.push(f.pixels);
    track.times.push(time);
    if (f.stimulus) {
      let tpl = templates.get(f.stream);
      if (!tpl) templates.set(f.stream, (tpl = { keys: new Map(), images: [] }));
      const id = f.imageId !== undefined ? `id:${f.imageId}:${f.stimulus.width}x${f.stimulus.height}` : `px:${createHash('sha1').update(f.stimulus.pixels).digest('hex')}`;
      let index = tpl.keys.get(id);
      if (index === undefined) {
        index = tpl.images.length;
        tpl.keys.set(id, index);
        tpl.images.push({ pixels: Uint8Array.from(f.stimulus.pixels), width: f.stimulus.width, height: f.stimulus.height });
      }
      track.stimulusIndex.push(index);
      track.stimulusTimes.push(time);
    }
    rows.push({ stream: f.stream, model: f.model, seq: Number(f.seq), imageId: f.imageId ?? -1, t: f.t, received: f.received });
    o.onFrame?.(rows.length, f);
    if (rows.length >= limit) break;
  }
  sub.close();
  writeSession(o.file, { start, models, tracks: [...tracks.values()], templates, rows, server: o.server });
  return { frames: rows.length, file: o.file };
}

function writeSession(
  file: string,
  s: {
    start: number;
    server: string;
    models: ServedModel[];
    tracks: Track[];
    templates: Map<string, { images: { pixels: Uint8Array; width: number; height: number }[] }>;
    rows: { stream: string; model: string; seq: number; imageId: number; t: FrameMessage['t']; received: number }[];
  },
): void {
  const w = NwbWriter.create(file, { identifier: `cortexcast-record-${s.start}-${process.pid}`, sessionDescription: `live decoding session recorded from ${s.server}`, sessionStartTime: new Date(s.start) });
  try {
    const summary = s.models.map((m) => ({ name: m.name, kind: m.kind, neurons: m.neurons, width: m.width, height: m.height, provider: m.provider, metrics: m.metrics, responseWindow: m.responseWindow }));
    w.text(w.group('general'), 'notes', JSON.stringify({ recordedBy: 'cortexcast record --nwb', server: s.server, models: summary }));
    const num = (xs: (number | undefined)[]): Float64Array => Float64Array.from(xs, (x) => (x === undefined ? NaN : x));
    w.table('analysis/served_models', 'DynamicTable', 'the models the server served while recording: name, kind, size, manifest metrics, response window', s.models.length, [
      { name: 'name', data: s.models.map((m) => m.name), description: 'model name on the server' },
      { name: 'kind', data: s.models.map((m) => m.kind ?? ''), description: 'decoder kind (ridge, cnn, gan, ...)' },
      { name: 'neurons', data: num(s.models.map((m) => m.neurons)), description: 'responses per frame the model expects' },
      { name: 'output_height', data: num(s.models.map((m) => m.height)), description: 'decoded image height (pixels)' },
      { name: 'output_width', data: num(s.models.map((m) => m.width)), description: 'decoded image width (pixels)' },
      { name: 'metrics', data: s.models.map((m) => JSON.stringify(m.metrics ?? {})), description: "the bundle manifest's recorded metrics (JSON)" },
      { name: 'window_length_frames', data: num(s.models.map((m) => m.responseWindow?.lengthFrames)), description: 'response window: imaging frames averaged per response' },
      { name: 'window_lag_frames', data: num(s.models.map((m) => m.responseWindow?.lagFrames)), description: 'response window: frames between onset and the first averaged frame' },
      { name: 'window_rate_hz', data: num(s.models.map((m) => m.responseWindow?.rateHz)), description: 'imaging rate the decoder was trained at (NaN: unknown)' },
    ]);
    const templatePaths = new Map<string, string>();
    for (const [stream, tpl] of s.templates) {
      if (!tpl.images.length) continue;
      const g = w.images(`stimulus/templates/stimuli_${nwbName(stream)}`, tpl.images.map((im) => ({ pixels: im.pixels, height: im.height, width: im.width })), `distinct stimuli shown on stream ${stream}`);
      templatePaths.set(stream, g.path);
    }
    const done = new Set<string>();
    for (const tr of s.tracks) {
      const name = `${nwbName(tr.stream)}_${nwbName(tr.model)}`;
      const frames = tr.pixels.length;
      const data = new Uint8Array(frames * tr.width * tr.height);
      tr.pixels.forEach((p, i) => data.set(p, i * tr.width * tr.height));
      w.timeSeries(`acquisition/decoded_${name}`, 'ImageSeries', {
        data,
        shape: [frames, tr.height, tr.width],
        unit: 'grey level (0..255)',
        timestamps: Float64Array.from(tr.times),
        description: `images decoded by model ${tr.model} from stream ${tr.stream}, timestamped on arrival`,
      });
      const tplPath = templatePaths.get(tr.stream);
      if (tplPath && tr.stimulusIndex.length && !done.has(tr.stream)) {
        done.add(tr.stream);
        const ix = w.timeSeries(`stimulus/presentation/stimulus_${nwbName(tr.stream)}`, 'IndexSeries', {
          data: Uint32Array.from(tr.stimulusIndex),
          shape: [tr.stimulusIndex.length],
          unit: 'N/A',
          timestamps: Float64Array.from(tr.stimulusTimes),
          description: `index of the stimulus shown, per decoded frame of stream ${tr.stream}`,
        });
        w.link(ix, 'indexed_images', tplPath);
      }
    }
    const col = (pick: (r: (typeof s.rows)[number]) => number | undefined): Float64Array => num(s.rows.map(pick));
    w.table('analysis/latency', 'DynamicTable', 'per decoded frame: the pipeline stages (epoch milliseconds as the server and this client stamped them)', s.rows.length, [
      { name: 'stream', data: s.rows.map((r) => r.stream), description: 'stream id' },
      { name: 'model', data: s.rows.map((r) => r.model), description: 'model name' },
      { name: 'seq', data: col((r) => r.seq), description: 'frame sequence number on its stream' },
      { name: 'image_id', data: col((r) => r.imageId), description: 'stimulus image id (-1: none sent)' },
      { name: 'acquired_ms', data: col((r) => r.t.acquired), description: 'acquisition time the rig stamped (NaN: none)' },
      { name: 'ingested_ms', data: col((r) => r.t.ingested), description: 'the server received the responses' },
      { name: 'decode_start_ms', data: col((r) => r.t.decodeStart), description: 'decoding started' },
      { name: 'decode_end_ms', data: col((r) => r.t.decodeEnd), description: 'decoding ended' },
      { name: 'sent_ms', data: col((r) => r.t.sent), description: 'the server sent the frame' },
      { name: 'received_ms', data: col((r) => r.received), description: 'this client received it' },
    ]);
    w.close();
  } catch (e) {
    w.abort();
    throw e;
  }
}
