import { defineConfig } from "vitest/config";

export default defineConfig({
  // ../shared (the logic and generated code both apps use) has no
  // node_modules: its bare imports resolve from this app's, like the build's.
  resolve: { dedupe: ["@bufbuild/protobuf", "vitest"] },
  test: {
    // The shared logic's tests run here, once for both apps.
    include: ["src/**/*.test.ts", "../shared/src/**/*.test.ts"],
    environment: "node",
  },
});
