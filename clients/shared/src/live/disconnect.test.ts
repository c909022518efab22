import { describe, expect, it } from "vitest";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { DisconnectSchema } from "../gen/chat/v1/chat_pb";
import { codeForStatus, decide } from "./disconnect";

describe("decide", () => {
  it("follows a Disconnect event over the code the stream ended with", () => {
    const ev = create(DisconnectSchema, { code: 4429, reason: "slow down", reconnect: true, retryAfter: durationFromMs(1_500) });
    expect(decide(ev, 1000)).toEqual({
      code: 4429,
      reason: "slow down",
      reconnect: true,
      newToken: false,
      minDelayMs: 1_500,
      authLost: false,
      fromEvent: true,
    });
    expect(decide(create(DisconnectSchema, { code: 4401, reconnect: true }), 4500).newToken).toBe(true);
    expect(decide(create(DisconnectSchema, { code: 4403, reconnect: false }), 4500).authLost).toBe(true);
    // An event saying no reconnect is final, even for a code the table would retry.
    expect(decide(create(DisconnectSchema, { code: 1012, reconnect: false }), 1012).reconnect).toBe(false);
  });

  it("falls back to the table without an event", () => {
    expect(decide(undefined, 4409, "by admin")).toMatchObject({ reconnect: false, reason: "by admin", fromEvent: false });
    expect(decide(undefined, 4401)).toMatchObject({ reconnect: true, newToken: true });
    expect(decide(undefined, 1006)).toMatchObject({ reconnect: true, newToken: false, minDelayMs: 0 });
  });
});

describe("codeForStatus", () => {
  it.each([
    [0, 1000], // OK
    [16, 4401], // Unauthenticated
    [7, 4403], // PermissionDenied
    [8, 4429], // ResourceExhausted
    [14, 1012], // Unavailable
    [10, 4409], // Aborted: an admin's disconnect
    [13, 4500], // Internal
    [2, 4500], // Unknown
  ])("gRPC status %i is code %i", (status, code) => {
    expect(codeForStatus(status)).toBe(code);
  });
});
