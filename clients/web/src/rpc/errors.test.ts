import { describe, expect, it } from "vitest";
import { grpc } from "@improbable-eng/grpc-web";
import { bodyMessage, errorText, explainRefusals } from "./errors";
import { RpcError } from "./client";

describe("bodyMessage", () => {
  it.each([
    ["text/plain; charset=utf-8", "origin http://127.0.0.2:8080 not allowed; add it with --allowed-origins\n", "origin http://127.0.0.2:8080 not allowed; add it with --allowed-origins"],
    ["application/json", '{"code":"PERMISSION_DENIED","message":"origin not allowed"}', "origin not allowed"],
    ["", '{"error":"too big"}', "too big"],
    ["application/json", "{broken", "{broken"],
    ["text/html", "<html><body>502</body></html>", ""],
    ["", "<!DOCTYPE html><p>x</p>", ""],
    ["text/plain", "   ", ""],
    ["text/plain", "a\n  b", "a b"],
  ])("%s %j → %j", (ct, body, want) => {
    expect(bodyMessage(ct, body)).toBe(want);
  });

  it("clips a long body", () => {
    const got = bodyMessage("text/plain", "x".repeat(1000));
    expect(got.length).toBe(300);
    expect(got.endsWith("…")).toBe(true);
  });
});

describe("errorText", () => {
  it("shows the server's message and the code", () => {
    expect(errorText(new RpcError(grpc.Code.PermissionDenied, "origin http://x:1 is not allowed"))).toBe(
      "origin http://x:1 is not allowed (PermissionDenied)",
    );
  });
  it("shows the code alone when the server said nothing", () => {
    expect(errorText(new RpcError(grpc.Code.PermissionDenied, ""))).toBe("PermissionDenied");
  });
  it("shows other errors' messages", () => {
    expect(errorText(new Error("cannot reach the server"))).toBe("cannot reach the server");
    expect(errorText("odd")).toBe("odd");
  });
});

// A transport that answers as the bridge does when it refuses a request
// before gRPC: an HTTP status, headers, and a body.
function answering(status: number, headers: Record<string, string>, chunks: string[]): grpc.TransportFactory {
  return (opts) => ({
    start() {},
    sendMessage() {},
    finishSend() {
      opts.onHeaders(new grpc.Metadata(headers), status);
      for (const c of chunks) opts.onChunk(new TextEncoder().encode(c));
      opts.onEnd();
    },
    cancel() {},
  });
}

function run(factory: grpc.TransportFactory) {
  const seen: { status?: number; message?: string[]; grpcStatus?: string[]; chunks: number; ended: boolean } = { chunks: 0, ended: false };
  const t = explainRefusals(factory)({
    methodDefinition: {} as never,
    debug: false,
    url: "http://x/chat.v1.Auth/Register",
    onHeaders: (h, status) => {
      seen.status = status;
      seen.message = h.get("grpc-message");
      seen.grpcStatus = h.get("grpc-status");
    },
    onChunk: () => {
      seen.chunks++;
    },
    onEnd: () => {
      seen.ended = true;
    },
  });
  t.start(new grpc.Metadata());
  t.finishSend();
  return seen;
}

describe("explainRefusals", () => {
  it("hands a plain HTTP refusal's body on as grpc-message", () => {
    const seen = run(answering(403, { "content-type": "text/plain; charset=utf-8" }, ["origin http://127.0.0.2:5 ", "is not allowed\n"]));
    expect(seen.status).toBe(403);
    expect(seen.message?.map(decodeURIComponent)).toEqual(["origin http://127.0.0.2:5 is not allowed"]);
    expect(seen.chunks).toBe(0); // the body is not a gRPC frame
    expect(seen.ended).toBe(true);
  });

  it("leaves gRPC answers alone", () => {
    const seen = run(answering(200, { "grpc-status": "7", "grpc-message": "nope" }, []));
    expect(seen.message).toEqual(["nope"]);
    const ok = run(answering(200, { "content-type": "application/grpc-web+proto" }, ["\u0000\u0000\u0000\u0000\u0000"]));
    expect(ok.chunks).toBe(1);
    expect(ok.message).toEqual([]);
  });

  it("adds nothing for an HTML error page", () => {
    const seen = run(answering(502, { "content-type": "text/html" }, ["<html>bad gateway</html>"]));
    expect(seen.status).toBe(502);
    expect(seen.message).toEqual([]);
  });
});
