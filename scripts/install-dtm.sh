#!/usr/bin/env bash
# Installs the DTM server (default v1.19.0) from the Go module proxy into a cache outside the
# clone, unless it is already there, and prints the binary's path on stdout.
#
#   DTM_VERSION    version to install (default v1.19.0)
#   DTM_SDK_CACHE  cache folder (default ~/.cache/dtm-rs); the binary is bin/dtm-<version>
set -euo pipefail

version="${DTM_VERSION:-v1.19.0}"
cache="${DTM_SDK_CACHE:-$HOME/.cache/dtm-rs}"
bin="$cache/bin/dtm-$version"

if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "install-dtm: Go is needed to install the DTM server (https://go.dev/dl/)" >&2
  exit 1
fi
mkdir -p "$cache/bin"
log() { echo "install-dtm: $*" >&2; }

log "installing github.com/dtm-labs/dtm@$version (a few minutes the first time)"
gobin="$(mktemp -d)"
trap 'rm -rf "$gobin"' EXIT
if GOBIN="$gobin" go install "github.com/dtm-labs/dtm@$version" >&2 && [ -x "$gobin/dtm" ]; then
  mv "$gobin/dtm" "$bin"
else
  # `go install pkg@version` also reads the module's version list (for deprecation notices);
  # some module proxies refuse that list. Building the same module version from a scratch
  # module needs only the version itself.
  log "go install failed; building $version from a scratch module instead"
  work="$gobin/build"
  mkdir -p "$work"
  (
    cd "$work"
    go mod init dtm-install >/dev/null 2>&1
    go get "github.com/dtm-labs/dtm@$version" >&2
    go build -o "$bin.partial" github.com/dtm-labs/dtm >&2
  )
  mv "$bin.partial" "$bin"
fi
log "installed $bin"
echo "$bin"
