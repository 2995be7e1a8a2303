#!/usr/bin/env bash
# Runs dev.guardwire.example.Example (build.sh first). Arguments: --addr, --text, --down-addr, --timeout-ms.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec java -cp "$here/build/guardwire-client.jar:$("$here/classpath.sh")" dev.guardwire.example.Example "$@"
