import { utf8Decode, utf8Encode } from "./utf8";

describe("utf8 fallback codec", () => {
  it.each(["", "hello", "héllo wörld", "日本語", "emoji 👋🏽 mix", "\u0000\u007f\u0080\u07ff\u0800\uffff"])("round-trips %j like TextEncoder", (s) => {
    const mine = utf8Encode(s);
    expect(Array.from(mine)).toEqual(Array.from(new TextEncoder().encode(s)));
    expect(utf8Decode(mine)).toBe(s);
  });

  it("replaces lone surrogates and malformed bytes with U+FFFD", () => {
    expect(utf8Decode(utf8Encode("a\ud800b"))).toBe("a\ufffdb");
    expect(utf8Decode(new Uint8Array([0x61, 0xc0, 0x80, 0x62]))).toBe("a\ufffd\ufffdb");
    expect(utf8Decode(new Uint8Array([0xe2, 0x82]))).toBe("\ufffd\ufffd");
  });
});
