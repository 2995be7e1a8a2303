#!/usr/bin/env bash
# Builds the Java client with javac (Maven Central is not reachable in CI; Debian's jars are
# used instead): build/classes and build/guardwire-client.jar (client + generated stubs).
#   clients/java/build.sh && clients/java/run-example.sh --addr 127.0.0.1:50051
set -euo pipefail
cd "$(dirname "$0")"
cp="$(./classpath.sh)"
rm -rf build/classes
mkdir -p build/classes
javac --release 17 -encoding UTF-8 -nowarn -d build/classes -cp "$cp" \
  $(find gen src/main/java src/example/java -name '*.java' | sort)
jar --create --file build/guardwire-client.jar -C build/classes .
echo "built clients/java/build/guardwire-client.jar"
