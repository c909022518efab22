#!/bin/sh
# Regenerates clients/shared/src/gen (TypeScript from proto/chat/v1, shared by
# both apps) with buf and the protoc-gen-es pinned in this app's
# package-lock.json. Run via `npm run gen`.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$here/../.." && pwd)
BUF=${BUF:-}
if [ -z "$BUF" ]; then
  if command -v buf >/dev/null 2>&1; then BUF=buf
  elif [ -x "$(go env GOPATH 2>/dev/null)/bin/buf" ]; then BUF="$(go env GOPATH)/bin/buf"
  else
    echo "gen.sh: buf not found; install it with: go install github.com/bufbuild/buf/cmd/buf@v1.75.0" >&2
    exit 1
  fi
fi
if [ ! -x "$here/node_modules/.bin/protoc-gen-es" ]; then
  echo "gen.sh: run npm ci in clients/web first" >&2
  exit 1
fi
cd "$root"
# clients/shared/buf.gen.yaml names the plugin protoc-gen-es: this app's.
PATH="$here/node_modules/.bin:$PATH" "$BUF" generate --template clients/shared/buf.gen.yaml
