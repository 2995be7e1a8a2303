# Shared helpers of the scripts/gen-protos.d/*.sh generators (sourced, not run: the name
# does not end in .sh, so scripts/gen-protos does not execute it).
#
# A generator whose toolchain is missing prints a warning and skips (so a Python-only
# developer can still run scripts/gen-protos), unless GUARDWIRE_GEN_STRICT=1, which
# scripts/check-protos and CI set: there a missing toolchain is an error.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PROTO_DIR=protos
# google/rpc/{status,error_details}.proto, copied from googleapis-common-protos 1.76.0
# (PyPI) so that codegen does not depend on the installed Python package's version.
THIRD_PARTY=scripts/gen-protos.d/third_party
GUARDWIRE_PROTOS=(guardwire/v1/conversation.proto guardwire/v1/error_reason.proto
                  guardwire/v1/guard_service.proto guardwire/v1/verdict.proto)
RPC_PROTOS=(google/rpc/status.proto google/rpc/error_details.proto)

# require_tool LANG TOOL [HINT]: skip (exit 0) or fail when TOOL is not on PATH / not a file.
require_tool() {
  local lang="$1" tool="$2" hint="${3:-scripts/install-client-toolchains $1}"
  if [[ "$tool" == */* ]]; then [ -x "$tool" ] && return 0; else command -v "$tool" >/dev/null && return 0; fi
  if [ "${GUARDWIRE_GEN_STRICT:-0}" = 1 ]; then
    echo "gen-protos[$lang]: $tool not found (run: $hint)" >&2
    exit 1
  fi
  echo "gen-protos[$lang]: WARNING: $tool not found, $lang code NOT regenerated (run: $hint)" >&2
  exit 0
}

# Debian's protoc 3.21.12 matches the Java and C++ protobuf runtimes of Debian bookworm;
# the generated Java/C++ code only compiles against the runtime of the same version.
require_protoc() {
  local lang="$1"
  require_tool "$lang" /usr/bin/protoc
  local v
  v="$(/usr/bin/protoc --version)"
  if [ "$v" != "libprotoc 3.21.12" ] && [ "${GUARDWIRE_GEN_STRICT:-0}" = 1 ]; then
    echo "gen-protos[$lang]: expected Debian bookworm protoc 3.21.12, found '$v'" >&2
    exit 1
  fi
}

# fresh_dir DIR: empty DIR (generated code only) and recreate it.
fresh_dir() { rm -rf "$1"; mkdir -p "$1"; }
