#!/usr/bin/env bash
# TypeScript: clients/typescript/src/gen (guardwire/v1 + google/rpc), from protoc-gen-es
# (version pinned in clients/typescript/package-lock.json) run by buf (PyPI buf-bin).
source "$(dirname "$0")/lib.bash"
ts=clients/typescript
buf=buf
command -v buf >/dev/null || buf="$ROOT/.venv/bin/buf"
require_tool typescript "$buf" "pip install buf-bin"
require_tool typescript "$ts/node_modules/.bin/protoc-gen-es"
fresh_dir "$ts/src/gen"
# buf resolves the local plugin through PATH.
export PATH="$ROOT/$ts/node_modules/.bin:$PATH"
"$buf" generate "$PROTO_DIR" --template "$ts/buf.gen.yaml"
"$buf" generate "$THIRD_PARTY" --template "$ts/buf.gen.yaml" --path "$THIRD_PARTY/google/rpc"
echo "gen-protos[typescript]: $ts/src/gen"
