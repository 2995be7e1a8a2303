#!/usr/bin/env bash
# Java: clients/java/gen (dev.guardwire.v1 + com.google.rpc), from Debian's protoc 3.21.12
# and grpc_java_plugin 1.41.3, matching libprotobuf-java 3.21.12 / libgrpc-java 1.41.3.
source "$(dirname "$0")/lib.bash"
require_protoc java
require_tool java /usr/bin/grpc_java_plugin
fresh_dir clients/java/gen
/usr/bin/protoc -I"$PROTO_DIR" \
  --plugin=protoc-gen-grpc-java=/usr/bin/grpc_java_plugin \
  --java_out=clients/java/gen --grpc-java_out=clients/java/gen \
  "${GUARDWIRE_PROTOS[@]}"
/usr/bin/protoc -I"$THIRD_PARTY" --java_out=clients/java/gen "${RPC_PROTOS[@]}"
echo "gen-protos[java]: clients/java/gen"
