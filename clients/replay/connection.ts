import { DecoderConnection, type FrameAck, type FrameStream } from '../lib/index.js';

/**
 * The rig's side of StreamFrames across server restarts: `ready()` (re)connects when the stream
 * broke, failing fast while the server is down so that frames are not queued in the channel.
 */
export class RigStream {
  stream?: FrameStream;
  private conn?: DecoderConnection;
  private broken = true;
  private backoffMs = 100;

  constructor(
    private readonly server: string,
    private readonly token: string | undefined,
    private readonly onAck: (a: FrameAck) => void,
    /** The server refused the stream (UNAUTHENTICATED): why, for the caller's report. */
    private readonly onRefused: (why: string) => void,
  ) {}

  /** True when a stream is open (a new one if the last broke); false when the server cannot be reached. */
  async ready(): Promise<{ ok: boolean; reconnected: boolean }> {
    if (!this.broken) return { ok: true, reconnected: false };
    this.conn?.close();
    const conn = (this.conn = new DecoderConnection(this.server, { token: this.token }));
    try {
      await new Promise<void>((resolve, reject) => conn.client.waitForReady(Date.now() + 1000, (e) => (e ? reject(e) : resolve())));
    } catch {
      return { ok: false, reconnected: false };
    }
    const stream = (this.stream = conn.openStream(this.onAck));
    this.broken = false;
    stream.done.catch((e: Error & { code?: number }) => {
      this.broken = true;
      if (e.code === 16) this.onRefused(`server refused the stream: ${e.message}`);
    });
    return { ok: true, reconnected: true };
  }

  /**
   * ready() with the rig's retry policy: while the server cannot be reached, pause before saying so
   * (100 ms, doubling to 5 s) so that a caller that drops the frame and goes on does not spin; the
   * pause starts again at 100 ms once a stream is open.
   */
  async next(signal?: AbortSignal): Promise<'down' | 'open' | 'reopened'> {
    const link = await this.ready();
    if (!link.ok) {
      await sleep(this.backoffMs, signal);
      this.backoffMs = Math.min(5000, this.backoffMs * 2);
      return 'down';
    }
    if (!link.reconnected) return 'open';
    this.backoffMs = 100;
    return 'reopened';
  }

  /** Half-close and wait (at most waitMs) for the server to end the stream, i.e. for the last acks. */
  async finish(waitMs: number): Promise<void> {
    this.stream?.end();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.stream?.done.catch(() => undefined), new Promise<void>((r) => (timer = setTimeout(r, waitMs)))]);
    clearTimeout(timer);
    this.conn?.close();
  }
}

/** Resolves after ms, or at once when the signal aborts. */
export const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((r) => {
    if (signal?.aborted) return r();
    const onAbort = (): void => {
      clearTimeout(t);
      r();
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      r();
    }, Math.max(0, ms));
    signal?.addEventListener('abort', onAbort, { once: true });
  });
