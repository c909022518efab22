import { describe, expect, it } from "vitest";
import { create, toBinary } from "@bufbuild/protobuf";
import { Chat, ClientEventSchema, ServerEventSchema } from "../../../shared/src/gen/chat/v1/chat_pb";
import { Auth } from "../../../shared/src/gen/chat/v1/auth_pb";
import { Admin } from "../../../shared/src/gen/chat/v1/admin_pb";
import { methodDefinition, unaryDefinition, wire, wireClass } from "./adapter";

describe("methodDefinition", () => {
  it("describes the bidi Connect stream", () => {
    const d = methodDefinition(Chat.method.connect);
    expect(d.methodName).toBe("Connect");
    expect(d.service.serviceName).toBe("chat.v1.Chat");
    expect(d.requestStream).toBe(true);
    expect(d.responseStream).toBe(true);
  });

  it("describes unary and streaming methods", () => {
    const login = unaryDefinition(Auth.method.login);
    expect([login.service.serviceName, login.methodName, login.requestStream, login.responseStream]).toEqual([
      "chat.v1.Auth",
      "Login",
      false,
      false,
    ]);
    const dl = methodDefinition(Chat.method.downloadFile);
    expect([dl.requestStream, dl.responseStream]).toEqual([false, true]);
    const ul = methodDefinition(Chat.method.uploadFile);
    expect([ul.requestStream, ul.responseStream]).toEqual([true, false]);
    expect(unaryDefinition(Admin.method.getStats).methodName).toBe("GetStats");
  });

  it("refuses a streaming method as unary", () => {
    expect(() => unaryDefinition(Chat.method.connect as never)).toThrow(/not unary/);
  });

  it("round-trips messages through serializeBinary/deserializeBinary", () => {
    const d = methodDefinition(Chat.method.connect);
    const req = wire(ClientEventSchema, {
      requestId: "r1",
      event: { case: "sendMessage", value: { room: "general", text: "héllo ✓", clientMsgId: "c1" } },
    });
    const bytes = req.serializeBinary();
    expect(bytes).toEqual(toBinary(ClientEventSchema, req.message));
    const back = d.requestType.deserializeBinary(bytes);
    expect(back.message.event.case).toBe("sendMessage");
    expect(back.message.event.value).toMatchObject({ room: "general", text: "héllo ✓", clientMsgId: "c1" });

    const ev = create(ServerEventSchema, { requestId: "x", event: { case: "pong", value: {} } });
    const decoded = d.responseType.deserializeBinary(toBinary(ServerEventSchema, ev));
    expect(decoded.message.event.case).toBe("pong");
    expect(decoded.message.requestId).toBe("x");
    expect(decoded.toObject()).toMatchObject({ requestId: "x" });
  });

  it("caches one class per schema and constructs empty messages", () => {
    expect(wireClass(ServerEventSchema)).toBe(wireClass(ServerEventSchema));
    const C = wireClass(ServerEventSchema);
    expect(new C().message.event.case).toBeUndefined();
  });
});
