import type { Socket } from 'node:net';
import type { ServerConfig } from './config.js';
import type { ServerMetrics } from './metrics.js';

interface Connection {
  socket: Socket;
  peer: string;
  /** A call on it carried the token (any call, when no token is set). */
  proven: boolean;
}

const keyOf = (address: string | undefined, port: number | undefined): string => `${address ?? '?'}|${port ?? 0}`;

/**
 * Who may hold the gRPC port's connections. A connection starts unproven; the first call that
 * carries the token proves it (with no token configured, any call does). Unproven connections,
 * silent ones included, may fill only maxConnections - reservedConnections, and one peer address
 * may hold at most maxConnectionsPerPeer; at either limit the oldest unproven connection (of that
 * peer, for the per-peer limit) is closed to make room, so a flood of connections that never
 * authenticate cannot keep a rig that holds the token out. Connections that never send the HTTP/2
 * preface are closed at the handshake deadline.
 */
export class ConnectionGate {
  /** Insertion order is age order: the first unproven entry is the oldest. */
  private readonly conns = new Map<string, Connection>();
  private readonly perPeer = new Map<string, number>();
  private unproven = 0;

  constructor(
    private readonly limits: Pick<ServerConfig['limits'], 'maxConnections' | 'reservedConnections' | 'maxConnectionsPerPeer' | 'handshakeTimeoutMs'>,
    private readonly metrics: ServerMetrics,
  ) {}

  get size(): number {
    return this.conns.size;
  }

  /** Take a new TCP connection, or close it (counted by reason). True when it was taken. */
  admit(socket: Socket): boolean {
    // A peer that reset before we looked has no address: nothing to serve.
    if (!socket.remoteAddress) return (socket.destroy(), false);
    const peer = socket.remoteAddress;
    const key = keyOf(socket.remoteAddress, socket.remotePort);
    const l = this.limits;
    if ((this.perPeer.get(peer) ?? 0) >= l.maxConnectionsPerPeer && !this.evictOldestUnproven(peer)) return this.refuse(socket, 'per_peer');
    if (this.conns.size >= l.maxConnections && !this.evictOldestUnproven()) return this.refuse(socket, 'max_connections');
    if (this.unproven >= l.maxConnections - l.reservedConnections && !this.evictOldestUnproven()) return this.refuse(socket, 'max_connections');
    const c: Connection = { socket, peer, proven: false };
    this.conns.set(key, c);
    this.perPeer.set(peer, (this.perPeer.get(peer) ?? 0) + 1);
    this.unproven++;
    this.gauges();
    socket.once('close', () => this.forget(key, c));
    // An absolute deadline, not an inactivity timer: a peer dripping one byte at a time gets no longer.
    const handshake = setTimeout(() => {
      // The preface is 24 bytes; a peer that sent fewer is not an HTTP/2 client.
      if (socket.bytesRead < 24) {
        this.metrics.connectionsRefused.inc({ reason: 'handshake_timeout' });
        this.metrics.framesRejected.inc({ reason: 'handshake_timeout' });
        socket.destroy();
      }
    }, l.handshakeTimeoutMs);
    handshake.unref();
    socket.once('close', () => clearTimeout(handshake));
    return true;
  }

  /** A call on this connection carried the token: it leaves the unproven pool. */
  prove(remoteAddress: string | undefined, remotePort: number | undefined): void {
    const c = this.conns.get(keyOf(remoteAddress, remotePort));
    if (!c || c.proven) return;
    c.proven = true;
    this.unproven--;
    this.gauges();
  }

  /** Close every connection (shutdown: what grpc-js did not close itself). */
  destroyAll(): void {
    for (const c of this.conns.values()) c.socket.destroy();
  }

  private evictOldestUnproven(peer?: string): boolean {
    for (const c of this.conns.values())
      if (!c.proven && (peer === undefined || c.peer === peer)) {
        this.metrics.connectionsRefused.inc({ reason: 'evicted' });
        // Forget it now: its close event comes later, and the slot is needed at once.
        for (const [k, v] of this.conns) if (v === c) this.forget(k, c);
        c.socket.destroy();
        return true;
      }
    return false;
  }

  private refuse(socket: Socket, reason: string): false {
    this.metrics.connectionsRefused.inc({ reason });
    socket.destroy();
    return false;
  }

  private forget(key: string, c: Connection): void {
    if (this.conns.get(key) !== c) return;
    this.conns.delete(key);
    const n = (this.perPeer.get(c.peer) ?? 1) - 1;
    if (n > 0) this.perPeer.set(c.peer, n);
    else this.perPeer.delete(c.peer);
    if (!c.proven) this.unproven--;
    this.gauges();
  }

  private gauges(): void {
    this.metrics.connections.set({ pool: 'proven' }, this.conns.size - this.unproven);
    this.metrics.connections.set({ pool: 'unproven' }, this.unproven);
  }
}
