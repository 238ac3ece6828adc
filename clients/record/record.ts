import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PNG } from 'pngjs';
import { encodeNpy } from '../../src/common/npy.js';
import { subscribe, type FrameMessage, type HelloMessage } from '../lib/index.js';

/**
 * Record a live session: every frame the server sends for a stream/model goes to disk as it arrives -
 * a PNG (and, with npy, the float32 model output as .npy) plus one line of frames.jsonl with all of its
 * timestamps. Files are written synchronously per frame, so nothing received is lost on Ctrl-C.
 */
export interface RecordOptions {
  server: string;
  out: string;
  stream?: string;
  model?: string;
  npy?: boolean;
  token?: string;
  maxFrames?: number;
  signal?: AbortSignal;
  /** Called once the server has accepted the subscription (its hello arrived): frames sent from now on reach the recording. */
  onSubscribed?: (hello: HelloMessage) => void;
  onFrame?: (n: number, f: FrameMessage) => void;
}

export function framePng(pixels: Uint8Array, width: number, height: number): Buffer {
  const png = new PNG({ width, height, colorType: 0, inputColorType: 0, inputHasAlpha: false });
  png.data = Buffer.from(pixels);
  return PNG.sync.write(png, { colorType: 0, inputColorType: 0, inputHasAlpha: false });
}

export async function record(o: RecordOptions): Promise<{ frames: number; dir: string }> {
  mkdirSync(o.out, { recursive: true });
  const sub = subscribe(o.server, { stream: o.stream, model: o.model, float: o.npy, token: o.token });
  o.onSubscribed?.(await sub.hello);
  o.signal?.addEventListener('abort', () => sub.close(), { once: true });
  const index = join(o.out, 'frames.jsonl');
  writeFileSync(index, '');
  let n = 0;
  for await (const f of sub) {
    const base = `${String(n).padStart(6, '0')}`;
    writeFileSync(join(o.out, `${base}.png`), framePng(f.pixels, f.width, f.height));
    if (o.npy && f.values) writeFileSync(join(o.out, `${base}.npy`), encodeNpy(f.values, [f.height, f.width]));
    appendFileSync(
      index,
      JSON.stringify({ file: `${base}.png`, stream: f.stream, model: f.model, seq: typeof f.seq === 'bigint' ? f.seq.toString() : f.seq, imageId: f.imageId, provider: f.provider, width: f.width, height: f.height, t: f.t, received: f.received }) + '\n',
    );
    n++;
    o.onFrame?.(n, f);
    if (o.maxFrames !== undefined && n >= o.maxFrames) break;
  }
  sub.close();
  return { frames: n, dir: o.out };
}
