#!/usr/bin/env bash
# Prints the runtime classpath of the Java client: Debian bookworm jars from /usr/share/java
# (scripts/install-client-toolchains java). No Maven Central needed.
set -euo pipefail
jars=(grpc-api grpc-core grpc-context grpc-netty grpc-protobuf grpc-protobuf-lite grpc-stub protobuf guava
      perfmark-api gson geronimo-annotation-1.3-spec error_prone_annotations jsr305
      netty-buffer netty-codec netty-codec-http netty-codec-http2 netty-common netty-handler
      netty-handler-proxy netty-codec-socks netty-resolver netty-transport
      netty-transport-native-unix-common)
cp=""
for j in "${jars[@]}"; do
  f=/usr/share/java/$j.jar
  [ -f "$f" ] || { echo "missing $f (run scripts/install-client-toolchains java)" >&2; exit 1; }
  cp="${cp:+$cp:}$f"
done
echo "$cp"
