#!/usr/bin/env bash
# Runs the whole test suite: unit tests, doc tests and the integration tests, which start the
# real DTM server themselves. Installs the DTM server first if it is missing, and installs
# (from Debian's packages) and starts the project's MariaDB and PostgreSQL (scripts/db.sh).
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

DTM_BIN="$(scripts/install-dtm.sh)"
export DTM_BIN
db_env="$(scripts/db.sh start)"
while IFS= read -r line; do export "${line?}"; done <<<"$db_env"
cargo test --workspace --all-features "$@"
