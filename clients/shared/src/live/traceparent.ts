// W3C Trace Context for the commands the live connection sends. A Connect
// stream carries many commands, so a trace context cannot ride on the
// stream's metadata: each ClientEvent carries its own in trace_parent
// (chat.proto), and the server's spans for that command (the command, the
// commit, the fan-out on every node) join the trace it names. The apps make
// no spans of their own; the trace id only ties the server's work for one
// send together and to the client's logs.
//
// Plain functions; randomness from crypto.getRandomValues where the engine
// has it (browsers, Node, Hermes with a polyfill), else Math.random.

/** randomHex returns n random bytes as 2n lowercase hex digits. */
export function randomHex(n: number): string {
  const b = new Uint8Array(n);
  const c = (globalThis as { crypto?: { getRandomValues?: (b: Uint8Array) => Uint8Array } }).crypto;
  if (c?.getRandomValues) c.getRandomValues(b);
  else for (let i = 0; i < b.length; i++) b[i] = Math.floor(Math.random() * 256);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** TRACE_PARENT matches a version-00 traceparent: version, trace id, parent id, flags. */
export const TRACE_PARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

/**
 * newTraceParent returns a traceparent for one command: version 00, a new
 * random trace id (16 bytes) and parent id (8 bytes), neither all zeros (the
 * spec's invalid value), and the sampled flag set.
 *
 * Sampled, because the server's default sampler follows a remote parent's
 * flag: unsampled, it would record nothing of these commands. A server that
 * wants a fraction of them samples by trace id (traceidratio), which the
 * random trace ids suit.
 */
export function newTraceParent(hex: (n: number) => string = randomHex): string {
  return `00-${nonZero(hex(16))}-${nonZero(hex(8))}-01`;
}

/** nonZero turns the all-zeros id, which W3C reserves as invalid, into a valid one. */
function nonZero(id: string): string {
  return /^0+$/.test(id) ? `${id.slice(0, -1)}1` : id;
}
