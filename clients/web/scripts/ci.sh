#!/bin/sh
# CI for the web app: install exactly what package-lock.json pins, check that
# the generated TypeScript and the committed dist/ match a fresh run, then
# unit tests and the browser end-to-end tests against a real parleyd.
#
#   sh clients/web/scripts/ci.sh      (from anywhere; needs node 20+, go, buf)
set -eu
cd "$(dirname "$0")/.."

# drift fails when a path differs from the commit or has untracked files.
drift() {
  if ! git diff --exit-code --stat -- "$1" || [ -n "$(git ls-files --others --exclude-standard -- "$1")" ]; then
    git ls-files --others --exclude-standard -- "$1"
    echo "ci.sh: $1 is stale: $2, then commit the result" >&2
    exit 1
  fi
}

echo "--- npm ci"
npm ci --no-audit --no-fund

echo "--- generated TypeScript (npm run gen)"
npm run gen
drift ../shared/src/gen "run npm run gen in clients/web"

echo "--- build (npm run build)"
npm run build
drift dist "run npm run build in clients/web"

echo "--- unit tests (npm test)"
npm test

echo "--- browser tests (npm run e2e)"
chromium=${CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq chromium
  else
    echo "ci.sh: $chromium is missing; install Debian's chromium (apt-get install chromium) or set CHROMIUM" >&2
    exit 1
  fi
fi
npm run e2e
