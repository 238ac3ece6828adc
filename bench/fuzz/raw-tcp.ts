import net from 'node:net';

/** What came back on a raw TCP connection: the first line (HTTP status line) and whether the server closed. */
export interface RawReply {
  bytes: Buffer;
  statusLine?: string;
  closed: boolean;
  timedOut: boolean;
  error?: string;
}

/**
 * Write `chunks`, optionally half-close, then wait until the server closes the connection or `ms`
 * pass. `onStatus` sees the bytes once a status line arrives and may write more (WebSocket frames
 * after a 101) and then decide how to finish: end (half-close) or destroy.
 */
export function exchange(port: number, chunks: Buffer[], o: { ms: number; end: boolean; afterHead?: (head: string, s: net.Socket) => void }): Promise<RawReply> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    let headSeen = false;
    let done = false;
    const finish = (r: Partial<RawReply>): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      const bytes = Buffer.concat(got);
      const text = bytes.toString('latin1');
      s.destroy();
      resolve({ bytes, statusLine: text.startsWith('HTTP/') ? text.split('\r\n')[0] : undefined, closed: false, timedOut: false, ...r });
    };
    const timer = setTimeout(() => finish({ timedOut: true }), o.ms);
    s.setNoDelay(true);
    s.on('connect', () => {
      for (const c of chunks) s.write(c);
      if (o.end && !o.afterHead) s.end();
    });
    s.on('data', (d: Buffer) => {
      got.push(d);
      if (!headSeen && o.afterHead) {
        const text = Buffer.concat(got).toString('latin1');
        const at = text.indexOf('\r\n\r\n');
        if (at >= 0) {
          headSeen = true;
          o.afterHead(text.slice(0, at), s);
        }
      }
    });
    s.on('end', () => finish({ closed: true }));
    s.on('close', () => finish({ closed: true }));
    s.on('error', (e: NodeJS.ErrnoException) => finish({ closed: true, error: e.code ?? e.message }));
  });
}
