import { describe, expect, it } from "vitest";
import { fileRefFromJson } from "./files";

describe("fileRefFromJson", () => {
  const id = "a".repeat(64);
  it("accepts protojson and wrapped forms", () => {
    expect(fileRefFromJson({ id, name: "a.txt", size: "12", contentType: "text/plain" })).toEqual({ id, name: "a.txt", size: 12, contentType: "text/plain" });
    expect(fileRefFromJson({ file: { id, name: "b", size: 3, content_type: "x/y" } })).toMatchObject({ name: "b", contentType: "x/y" });
  });
  it("rejects a response without an id", () => {
    expect(() => fileRefFromJson({ name: "x" })).toThrow(/no file id/);
  });
});
