#!/usr/bin/env bash
# Go: clients/go/gen/guardwire/v1 (package guardwirev1), from Debian's protoc-gen-go 1.28.1
# and protoc-gen-go-grpc 1.33.3 (grpc-go 1.33 needs SupportPackageIsVersion7 stubs).
# google.rpc types come from google.golang.org/genproto (Debian golang-google-genproto-dev).
source "$(dirname "$0")/lib.bash"
require_protoc go
require_tool go /usr/bin/protoc-gen-go
require_tool go /usr/bin/protoc-gen-go-grpc
mod=github.com/guardwire/guardwire/clients/go
fresh_dir clients/go/gen
/usr/bin/protoc -I"$PROTO_DIR" \
  --plugin=protoc-gen-go=/usr/bin/protoc-gen-go --plugin=protoc-gen-go-grpc=/usr/bin/protoc-gen-go-grpc \
  --go_out=clients/go --go_opt=module="$mod" \
  --go-grpc_out=clients/go --go-grpc_opt=module="$mod" \
  "${GUARDWIRE_PROTOS[@]}"
echo "gen-protos[go]: clients/go/gen"
