import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// Node's process, without pulling in @types/node for one line.
declare const process: { env: Record<string, string | undefined> };

// The dev server proxies every server path to a parleyd on :8080 (override
// with PARLEY_DEV_BACKEND), so `npm run dev` works against a real server.
const backend = process.env.PARLEY_DEV_BACKEND ?? "http://127.0.0.1:8080";

const proxied = {
  target: backend,
  changeOrigin: true,
  ws: true,
  // The bridge checks Origin against its allow-list; present the backend's
  // own origin so the dev server is accepted like the embedded app.
  headers: { Origin: backend },
};

export default defineConfig({
  plugins: [react()],
  // ../shared (the logic and generated code both apps use) has no
  // node_modules: dedupe resolves its bare imports from this app's root, so
  // the bundle holds one @bufbuild/protobuf.
  resolve: { dedupe: ["@bufbuild/protobuf"] },
  build: {
    outDir: "dist",
    emptyOutDir: true,
    // No source maps and no build-time values: identical sources must give a
    // byte-identical dist/ (CI rebuilds and diffs it).
    sourcemap: false,
    assetsDir: "assets",
    chunkSizeWarningLimit: 1024,
  },
  server: {
    port: 5173,
    // The dev server may serve ../shared as well as this app.
    fs: { allow: [".", "../shared"] },
    proxy: {
      "/chat.v1.Auth": proxied,
      "/chat.v1.Chat": proxied,
      "/chat.v1.Admin": proxied,
      "/api": proxied,
      "/ws": proxied,
    },
  },
});
