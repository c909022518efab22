#!/bin/sh
# Regenerates clients/shared/src/gen (TypeScript from proto/chat/v1, shared by
# both apps) with buf and the protoc-gen-es pinned in this app's
# package-lock.json. Run via `npm run gen`.
# buf: $BUF, else buf on PATH, else $(go env GOPATH)/bin/buf, else it is
# installed there with `go install` (the version the Makefile pins).
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
root=$(cd "$here/../.." && pwd)
BUF_VERSION=v1.75.0
BUF=${BUF:-}
if [ -z "$BUF" ]; then
  gobin="$(go env GOPATH 2>/dev/null)/bin"
  if command -v buf >/dev/null 2>&1; then BUF=buf
  elif [ -x "$gobin/buf" ]; then BUF="$gobin/buf"
  elif command -v go >/dev/null 2>&1; then
    echo "gen.sh: installing buf $BUF_VERSION into $gobin" >&2
    go install "github.com/bufbuild/buf/cmd/buf@$BUF_VERSION"
    BUF="$gobin/buf"
  else
    echo "gen.sh: buf not found; install it with: go install github.com/bufbuild/buf/cmd/buf@$BUF_VERSION" >&2
    exit 1
  fi
fi
if [ ! -x "$here/node_modules/.bin/protoc-gen-es" ]; then
  echo "gen.sh: run npm ci in clients/mobile first" >&2
  exit 1
fi
cd "$root"
# clients/shared/buf.gen.yaml names the plugin protoc-gen-es: this app's.
PATH="$here/node_modules/.bin:$PATH" "$BUF" generate --template clients/shared/buf.gen.yaml
