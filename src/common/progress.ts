import cliProgress from 'cli-progress';

export interface Progress {
  tick(n?: number, payload?: Record<string, string | number>): void;
  stop(): void;
}

/**
 * A progress bar on a terminal; on a pipe (CI, tests) a line every few seconds instead, so long work
 * stays visible in logs without flooding them.
 */
export function progress(label: string, total: number, opts: { quiet?: boolean; extra?: string } = {}): Progress {
  if (opts.quiet) return { tick: () => undefined, stop: () => undefined };
  const start = Date.now();
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        format: `${label} |{bar}| {value}/{total} {percentage}% eta {eta_formatted}${opts.extra ? ` ${opts.extra}` : ''}`,
        stream: process.stderr,
        hideCursor: true,
        etaBuffer: 50,
      },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0);
    return {
      tick: (n = 1, payload) => bar.increment(n, payload),
      stop: () => bar.stop(),
    };
  }
  let done = 0;
  let last = start;
  return {
    tick: (n = 1, payload) => {
      done += n;
      const now = Date.now();
      if (now - last > 5000) {
        last = now;
        const eta = ((now - start) / done) * (total - done) / 1000;
        const extra = payload ? ' ' + Object.entries(payload).map(([k, v]) => `${k} ${v}`).join(', ') : '';
        process.stderr.write(`${label}: ${done}/${total} (${((100 * done) / total).toFixed(0)}%) eta ${eta < 90 ? `${eta.toFixed(0)} s` : `${(eta / 60).toFixed(1)} min`}${extra}\n`);
      }
    },
    stop: () => process.stderr.write(`${label}: ${done}/${total} in ${((Date.now() - start) / 1000).toFixed(1)} s\n`),
  };
}
