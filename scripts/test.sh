#!/usr/bin/env bash
# Runs the whole test suite: unit tests, doc tests and the integration tests, which start the
# real DTM server themselves. Installs the DTM server first if it is missing.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

DTM_BIN="$(scripts/install-dtm.sh)"
export DTM_BIN
cargo test --workspace --all-features "$@"
