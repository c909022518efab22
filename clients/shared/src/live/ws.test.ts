import { describe, expect, it } from "vitest";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ClientEventSchema, ServerEventSchema } from "../gen/chat/v1/chat_pb";
import { closeDetail, decide } from "./disconnect";
import { decodeServerEvent, encodeClientEvent, exactBuffer, helloFrame, protocolsFor } from "./ws";

/** kindOf names what the fallback rule does after a close code. */
function kindOf(code: number): "stop" | "auth" | "retry" {
  const d = decide(undefined, code);
  if (!d.reconnect) return "stop";
  return d.newToken ? "auth" : "retry";
}

describe("frames", () => {
  it("puts the token in the subprotocols, after parley.v1", () => {
    expect(protocolsFor("abc.def.ghi")).toEqual(["parley.v1", "bearer.abc.def.ghi"]);
  });

  it("sends {} as the binary hello", () => {
    expect(new TextDecoder().decode(new Uint8Array(helloFrame()))).toBe("{}");
  });

  it("encodes a ClientEvent as exactly its protobuf bytes", () => {
    const buf = encodeClientEvent({ requestId: "r1", event: { case: "sendMessage", value: { room: "general", text: "hé 👋" } } });
    const ev = fromBinary(ClientEventSchema, new Uint8Array(buf));
    expect(ev.requestId).toBe("r1");
    expect(ev.event.case).toBe("sendMessage");
    expect(ev.event.case === "sendMessage" && ev.event.value.text).toBe("hé 👋");
  });

  it("copies a view that does not cover its whole buffer", () => {
    const big = new Uint8Array([9, 1, 2, 3, 9]);
    const b = exactBuffer(big.subarray(1, 4));
    expect(Array.from(new Uint8Array(b))).toEqual([1, 2, 3]);
  });

  it("decodes ArrayBuffers, typed arrays and ignores text frames", () => {
    const bytes = toBinary(ServerEventSchema, create(ServerEventSchema, { requestId: "x", event: { case: "pong", value: {} } }));
    expect(decodeServerEvent(exactBuffer(bytes))?.event.case).toBe("pong");
    expect(decodeServerEvent(bytes)?.requestId).toBe("x");
    expect(decodeServerEvent('{"pong":{}}')).toBeNull();
    expect(decodeServerEvent(null)).toBeNull();
  });

  it.each([
    [1000, "stop"],
    [4403, "stop"],
    [4401, "auth"],
    [1001, "retry"],
    [1006, "retry"],
    [1012, "retry"],
    [4408, "retry"],
    [4500, "retry"],
  ])("close code %i means %s", (code, kind) => {
    expect(kindOf(code)).toBe(kind);
  });

  it("waits longer after 4429", () => {
    expect(kindOf(4429)).toBe("retry");
    expect(decide(undefined, 4429).minDelayMs).toBe(5_000);
  });

  it("describes close codes for people", () => {
    expect(closeDetail(1012, "")).toBe("server restarting");
    expect(closeDetail(4401, "token expired")).toBe("not signed in: token expired");
    expect(closeDetail(3999, "")).toBe("closed (3999)");
  });
});
