#!/usr/bin/env bash
# Runs the quick start on this machine: installs the DTM server if needed, starts it with its
# embedded boltdb store in a temporary folder, runs `cargo run --example quick_start` (which
# starts the example business service on SQLite and runs a saga, a failing saga, a TCC and a
# message), then stops DTM.
#
#   scripts/demo.sh [EXAMPLE]      another example instead of quick_start (grpc_quick_start,
#                                  tcc_barrier with DATABASE_URL, ...)
#
#   DTM_HTTP_PORT / DTM_GRPC_PORT  DTM's ports (default 26789 / 26790)
#   BUSI_ADDR, GRPC_BUSI_ADDR      the example services (default 127.0.0.1:28081 / :28082)
#   WORKFLOW_ADDR                  the workflow examples' resume endpoint (default :28083)
#
# The default ports sit below Linux's ephemeral range (32768-60999): DTM's own defaults
# (36789 / 36790) lie inside it, where an outgoing connection or a TIME-WAIT socket on a busy
# machine can hold them.
set -euo pipefail
cd "$(dirname "$0")/.."

dtm_bin="$(scripts/install-dtm.sh)"
http_port="${DTM_HTTP_PORT:-26789}"
grpc_port="${DTM_GRPC_PORT:-26790}"
export BUSI_ADDR="${BUSI_ADDR:-127.0.0.1:28081}"
export GRPC_BUSI_ADDR="${GRPC_BUSI_ADDR:-127.0.0.1:28082}"
export WORKFLOW_ADDR="${WORKFLOW_ADDR:-127.0.0.1:28083}"
work="$(mktemp -d)"
cat >"$work/conf.yml" <<YAML
Store:
  Driver: boltdb
HttpPort: $http_port
GrpcPort: $grpc_port
UpdateBranchSync: 1
LogLevel: warn
YAML

(cd "$work" && exec "$dtm_bin" -c "$work/conf.yml" >"$work/dtm.log" 2>&1) &
dtm_pid=$!
trap 'kill "$dtm_pid" 2>/dev/null; wait "$dtm_pid" 2>/dev/null; rm -rf "$work"' EXIT

for _ in $(seq 1 150); do
  if curl -fsS "http://127.0.0.1:$http_port/api/ping" >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 "$dtm_pid" 2>/dev/null; then
    echo "demo: DTM exited; its log:" >&2
    cat "$work/dtm.log" >&2
    exit 1
  fi
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$http_port/api/ping" >/dev/null || {
  echo "demo: DTM did not answer on port $http_port; its log:" >&2
  cat "$work/dtm.log" >&2
  exit 1
}
echo "demo: DTM $dtm_bin is up on port $http_port (boltdb store in $work)"

example="${1:-quick_start}"
DTM_SERVER="http://127.0.0.1:$http_port/api/dtmsvr" DTM_GRPC_SERVER="127.0.0.1:$grpc_port" \
  cargo run --quiet --example "$example"
