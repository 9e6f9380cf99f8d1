#!/usr/bin/env bash
# The newcomer's first command: installs what is missing, builds `model`, fetches the default model
# (SmolLM2-135M-Instruct, GGUF Q4_1), packages it as an OCI artifact, pushes it to a local registry,
# pulls it back into a fresh store with progress, and lists it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --quiet
model=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/model
gguf=$(scripts/fetch-default-model.sh)

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
YAML
/usr/bin/docker-registry serve "$work/registry.yml" >/dev/null 2>&1 &
registry_pid=$!
trap 'kill $registry_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done

ref=127.0.0.1:$port/ai/smollm2:135M-Q4_1
export MODEL_RUNNER_HOME=$work/publisher
echo "== package and push $ref"
"$model" package --gguf "$gguf" --push "$ref"
export MODEL_RUNNER_HOME=${QUICKSTART_HOME:-$work/store}
echo "== pull $ref into $MODEL_RUNNER_HOME"
"$model" pull "$ref"
echo "== ls"
"$model" ls
