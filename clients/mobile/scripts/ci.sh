#!/bin/sh
# CI for the React Native app: install exactly what package-lock.json pins,
# check that the generated TypeScript matches a fresh run, type-check, then
# jest: unit tests and the end-to-end test against a real parleyd (built from
# this repository with go).
#
#   sh clients/mobile/scripts/ci.sh      (from anywhere; needs node 20.19+, go;
#                                         buf is installed with go when missing)
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
drift ../shared/src/gen "run npm run gen in clients/mobile"

echo "--- type check (tsc --noEmit)"
npm run typecheck

echo "--- jest (unit tests, then the end-to-end test against a real parleyd)"
npx jest --ci --runInBand

echo "--- Metro release bundle (android): the app and clients/shared resolve as a device build does"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
npx react-native bundle --platform android --dev false --entry-file index.js \
  --bundle-output "$out/index.android.js" --assets-dest "$out" --reset-cache >"$out/log" 2>&1 || { cat "$out/log"; exit 1; }
test -s "$out/index.android.js"
