// protobuf-es encodes and decodes strings with TextEncoder/TextDecoder. When
// the JS engine lacks them (older Hermes builds), a small UTF-8 codec takes
// their place. Imported once, first, from index.js.

import { configureTextEncoding } from "@bufbuild/protobuf/wire";
import { utf8Decode, utf8Encode } from "./utf8";

const g = globalThis as { TextEncoder?: unknown; TextDecoder?: unknown };
if (typeof g.TextEncoder !== "function" || typeof g.TextDecoder !== "function") {
  configureTextEncoding({
    encodeUtf8: utf8Encode,
    decodeUtf8: utf8Decode,
    checkUtf8: (s: string) => {
      try {
        encodeURIComponent(s);
        return true;
      } catch {
        return false;
      }
    },
  });
}
