/**
 * A uint64 carried as a decimal string (how protobuf 64-bit integers arrive, exactly) as a JavaScript
 * value: a number where that is exact (up to 2^53 - 1), else a BigInt. The server uses it for the
 * msgpack `seq` of WebSocket frames, the client library for acks, so both sides agree.
 */
export const exactInteger = (s: string | number): number | bigint => {
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : BigInt(s);
};
