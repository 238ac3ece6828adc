import * as grpc from '@grpc/grpc-js';
import { timingSafeEqual, createHash, randomBytes } from 'node:crypto';
import { ccError } from '../common/errors.js';
import type { ServerConfig } from './config.js';
import type { ServerMetrics } from './metrics.js';

/** Constant-time token comparison (hashes first so lengths do not leak). */
export function tokenMatches(given: string, expected: string): boolean {
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/** The token of an `Authorization: Bearer <token>` value (or the value itself without the scheme). */
export const bearer = (header: unknown): string => String(header ?? '').replace(/^Bearer\s+/i, '');

/**
 * The call guard's mark on the metadata of a call it let through with the shared or admin token: a
 * metadata key a client's own value of which the guard removes first, set to a value of this process.
 */
const GUARD_KEY = 'x-cortexcast-authorised';
const GUARD_MARK = randomBytes(16).toString('hex');

/** gRPC calls: the metadata carries the configured token, or the call guard let it through with one (always true when none is configured). */
export const metadataAuthorised = (md: { get(key: string): unknown[] }, token: string | undefined): boolean =>
  !token || md.get(GUARD_KEY)[0] === GUARD_MARK || tokenMatches(bearer(md.get('authorization')[0]), token);

export const UNAUTHENTICATED_DETAILS = 'missing or wrong token (metadata authorization: Bearer <token>)';

export const HEALTH_CHECK_PATH = '/grpc.health.v1.Health/Check';
export const HEALTH_WATCH_PATH = '/grpc.health.v1.Health/Watch';
export const RELOAD_PATH = '/cortexcast.v1.Decoder/ReloadModels';

/** What a presented token is worth: the shared token (rig), the admin token (admin, which is also a rig). */
export function accessOf(presented: string, auth: ServerConfig['auth']): { rig: boolean; admin: boolean } {
  const admin = !!auth.adminToken && !!presented && tokenMatches(presented, auth.adminToken);
  return { admin, rig: admin || !auth.token || (!!presented && tokenMatches(presented, auth.token)) };
}

interface Refusal {
  code: grpc.status;
  reason: string;
  details: string;
}

/** 127.0.0.0/8 and ::1 (also as IPv4-mapped IPv6): a caller on the server's own host. */
export const isLoopback = (address: string | undefined): boolean => !!address && (/^(::ffff:)?127\./i.test(address) || address === '::1');

/** Why a call may not start, from its path, metadata and peer alone; undefined when it may. */
function refusalOf(path: string, access: { rig: boolean; admin: boolean }, auth: ServerConfig['auth'], peer: string | undefined): Refusal | undefined {
  // Load balancers' probes: one small unary answer, never behind the token.
  if (path === HEALTH_CHECK_PATH) return undefined;
  if (path === RELOAD_PATH) {
    if (access.admin) return undefined;
    // Without an admin token, reloads are for the server's own host (with the shared token when one is set).
    if (!auth.adminToken) {
      if (!access.rig) return { code: grpc.status.UNAUTHENTICATED, reason: 'unauthenticated', details: UNAUTHENTICATED_DETAILS };
      if (isLoopback(peer)) return undefined;
      return { code: grpc.status.PERMISSION_DENIED, reason: 'admin_token', details: ccError('CC_ERR_ADMIN_TOKEN', 'ReloadModels from another host', 'no auth.adminToken is configured: reload from the server host, or send SIGHUP').message };
    }
    return { code: access.rig && auth.token ? grpc.status.PERMISSION_DENIED : grpc.status.UNAUTHENTICATED, reason: access.rig && auth.token ? 'admin_token' : 'unauthenticated', details: ccError('CC_ERR_ADMIN_TOKEN', 'ReloadModels', 'metadata authorization: Bearer <admin token>').message };
  }
  if (!access.rig) return { code: grpc.status.UNAUTHENTICATED, reason: 'unauthenticated', details: UNAUTHENTICATED_DETAILS };
  return undefined;
}

export interface CallGuardDeps {
  auth: ServerConfig['auth'];
  maxWatchCalls: number;
  metrics: ServerMetrics;
  /** A call carried the token (any call when none is set): its connection is proven. */
  prove: (info: { remoteAddress?: string; remotePort?: number }) => void;
}

/**
 * The first server interceptor: decides from a call's metadata alone, before grpc-js reads or
 * deserialises a byte of its body (reading starts only when the handler runs, and a refused call
 * never reaches it). Refuses calls without the token (all but Health/Check), ReloadModels without
 * the admin token, and Health/Watch calls over maxWatchCalls; marks connections that proved the token.
 */
export function callGuard(d: CallGuardDeps): grpc.ServerInterceptor {
  let watches = 0;
  return (method, call) => {
    let holdsWatch = false;
    const release = (): void => {
      if (holdsWatch) watches--;
      holdsWatch = false;
    };
    return new grpc.ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (md, nextMd) => {
            md.remove(GUARD_KEY);
            const access = accessOf(bearer(md.get('authorization')[0]), d.auth);
            let refusal = refusalOf(method.path, access, d.auth, call.getConnectionInfo().remoteAddress);
            if (!refusal && method.path === HEALTH_WATCH_PATH) {
              if (watches >= d.maxWatchCalls) refusal = { code: grpc.status.RESOURCE_EXHAUSTED, reason: 'watch_limit', details: `${watches} Health/Watch calls are open (limits.maxWatchCalls); poll Health/Check instead` };
              else {
                watches++;
                holdsWatch = true;
              }
            }
            if (refusal) {
              d.metrics.callsRefused.inc({ reason: refusal.reason });
              if (refusal.reason === 'unauthenticated') d.metrics.framesRejected.inc({ reason: 'unauthenticated' });
              call.sendStatus({ code: refusal.code, details: refusal.details, metadata: new grpc.Metadata() });
              return;
            }
            if (access.rig && method.path !== HEALTH_CHECK_PATH) d.prove(call.getConnectionInfo());
            if (access.rig) md.set(GUARD_KEY, GUARD_MARK);
            nextMd(md);
          },
          onCancel: release,
        }),
      sendStatus: (s, next) => {
        release();
        next(s);
      },
    });
  };
}

/** The names this server answers to on its HTTP port: loopback names, the bind host, and the configured extras. */
export function ownHosts(cfg: Pick<ServerConfig, 'host' | 'auth'>, port: number): Set<string> {
  const names = ['localhost', '127.0.0.1', '[::1]'];
  const bind = cfg.host.includes(':') && !cfg.host.startsWith('[') ? `[${cfg.host}]` : cfg.host;
  // A wildcard bind has no name of its own: the operator lists the names it is reached by.
  if (bind !== '0.0.0.0' && bind !== '[::]') names.push(bind);
  const out = new Set<string>();
  for (const n of names) out.add(`${n.toLowerCase()}:${port}`);
  for (const h of cfg.auth.allowedHosts) out.add(h.toLowerCase());
  return out;
}

/** A Host header is one of `allowed` (host:port, or a bare host there that allows it at any port). */
export function hostAllowed(host: string | undefined, allowed: ReadonlySet<string>, defaultPort: number): boolean {
  if (!host) return false;
  const h = host.toLowerCase();
  const withPort = /:\d+$/.test(h) ? h : `${h}:${defaultPort}`;
  return allowed.has(withPort) || allowed.has(withPort.replace(/:\d+$/, ''));
}

/** An Origin header (scheme://host[:port]) names one of the allowed hosts, or is listed in auth.allowedOrigins. */
export function originAllowed(origin: string, hosts: ReadonlySet<string>, allowedOrigins: readonly string[]): boolean {
  const o = origin.toLowerCase();
  if (allowedOrigins.some((a) => a.toLowerCase() === o)) return true;
  const m = /^(https?):\/\/([^/]+)$/.exec(o);
  if (!m) return false;
  return hostAllowed(m[2], hosts, m[1] === 'https' ? 443 : 80);
}
