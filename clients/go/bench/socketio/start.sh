#!/bin/sh
# Starts the Socket.IO reference server for parley-bench, installing its
# locked dependencies first if needed. Environment: JWT_SECRET (required;
# give parley-bench the same value in PARLEY_BENCH_SIO_SECRET), HOST
# (default 127.0.0.1), PORT (default 3000).
set -eu
cd "$(dirname "$0")"
[ -d node_modules ] || npm ci --no-audit --no-fund
exec node server.js
