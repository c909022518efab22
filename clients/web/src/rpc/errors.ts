// What the user reads when a call fails. The server explains a refusal in
// words ("origin http://chat.lan:8080 is not allowed; start parleyd with
// --allowed-origins ..."): gRPC answers carry it in grpc-message, but a
// refusal the bridge makes before gRPC (a foreign origin, a body too large)
// is a plain HTTP error whose explanation is in the body, which improbable's
// client never reads: it turns the HTTP status into a code as soon as the
// headers arrive. explainRefusals holds such an answer back until its body
// is in and hands the body's text on as grpc-message, so every caller sees
// the server's words and not only "PermissionDenied".

import { grpc } from "@improbable-eng/grpc-web";

/** MAX_ERROR_BODY bounds what is read of an error body. */
const MAX_ERROR_BODY = 4096;
/** MAX_ERROR_TEXT bounds the text shown from it. */
const MAX_ERROR_TEXT = 300;

/**
 * bodyMessage is the explanation in an error body: the `message` (or
 * `error`) of a JSON body such as the REST API's {"code","message"}, or the
 * text of a plain-text one. An HTML page or an empty body gives "".
 */
export function bodyMessage(contentType: string, body: string): string {
  const text = body.trim();
  if (!text) return "";
  if (/json/i.test(contentType) || text.startsWith("{")) {
    try {
      const j = JSON.parse(text) as { message?: unknown; error?: unknown };
      const m = typeof j.message === "string" ? j.message : typeof j.error === "string" ? j.error : "";
      if (m) return clip(m);
    } catch {
      // Not JSON after all: fall through to the text.
    }
  }
  if (/html/i.test(contentType) || /^<(!doctype|html)/i.test(text)) return "";
  return clip(text);
}

function clip(s: string): string {
  const one = s.replace(/\s+/g, " ").trim();
  return one.length > MAX_ERROR_TEXT ? `${one.slice(0, MAX_ERROR_TEXT - 1)}…` : one;
}

/**
 * explainRefusals wraps a transport so an HTTP error without a gRPC status
 * reaches the client with its body's text as grpc-message. The code stays
 * what improbable derives from the HTTP status (403 → PermissionDenied).
 * Answers with a grpc-status pass through untouched.
 */
export function explainRefusals(inner: grpc.TransportFactory = grpc.CrossBrowserHttpTransport({ withCredentials: false })): grpc.TransportFactory {
  return (opts) => {
    let held: { headers: grpc.Metadata; status: number } | null = null;
    const body: Uint8Array[] = [];
    let bodyBytes = 0;
    let released = false;
    const release = () => {
      if (!held || released) return;
      released = true;
      const headers = new grpc.Metadata(held.headers);
      const raw = new Uint8Array(bodyBytes);
      let at = 0;
      for (const b of body) {
        raw.set(b, at);
        at += b.byteLength;
      }
      const text = bodyMessage(headers.get("content-type")[0] ?? "", new TextDecoder().decode(raw));
      if (text && headers.get("grpc-message").length === 0) headers.set("grpc-message", encodeURIComponent(text));
      opts.onHeaders(headers, held.status);
    };
    return inner({
      ...opts,
      onHeaders(headers, status) {
        if (status >= 300 && headers.get("grpc-status").length === 0) {
          held = { headers, status };
          return;
        }
        opts.onHeaders(headers, status);
      },
      onChunk(bytes, flush) {
        if (!held) {
          opts.onChunk(bytes, flush);
          return;
        }
        const room = MAX_ERROR_BODY - bodyBytes;
        if (room > 0) {
          const part = bytes.byteLength > room ? bytes.subarray(0, room) : bytes;
          body.push(part);
          bodyBytes += part.byteLength;
        }
      },
      onEnd(err) {
        release();
        opts.onEnd(err);
      },
    });
  };
}

/** RpcLike is what errorText needs of a failed gRPC-Web call. */
interface RpcLike {
  message: string;
  codeName: string;
}

function isRpcLike(err: unknown): err is RpcLike {
  return typeof err === "object" && err !== null && typeof (err as RpcLike).codeName === "string";
}

/**
 * errorText is a failure for people: the server's message, followed by the
 * status name when there is one and it adds something ("origin … is not
 * allowed … (PermissionDenied)"); the name alone only when the server sent
 * no words.
 */
export function errorText(err: unknown): string {
  if (isRpcLike(err)) {
    const msg = err.message.trim();
    if (!msg || msg === err.codeName) return err.codeName;
    return `${msg} (${err.codeName})`;
  }
  if (err instanceof Error) return err.message || err.name;
  return String(err);
}
