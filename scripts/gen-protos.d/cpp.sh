#!/usr/bin/env bash
# C++: clients/cpp/gen (guardwire/v1 + google/rpc), from Debian's protoc 3.21.12 and
# grpc_cpp_plugin 1.51.1, matching libprotobuf-dev 3.21.12 / libgrpc++-dev 1.51.1.
source "$(dirname "$0")/lib.bash"
require_protoc cpp
require_tool cpp /usr/bin/grpc_cpp_plugin
fresh_dir clients/cpp/gen
/usr/bin/protoc -I"$PROTO_DIR" \
  --plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin \
  --cpp_out=clients/cpp/gen --grpc_out=clients/cpp/gen \
  "${GUARDWIRE_PROTOS[@]}"
/usr/bin/protoc -I"$THIRD_PARTY" --cpp_out=clients/cpp/gen "${RPC_PROTOS[@]}"
echo "gen-protos[cpp]: clients/cpp/gen"
