#!/usr/bin/env bash
# The newcomer's first command: installs what is missing, builds `model`, fetches the default model
# (SmolLM2-135M-Instruct, GGUF Q4_1), packages it as an OCI artifact, pushes it to a local registry,
# pulls it back into a fresh store with progress, lists it, runs a prompt, then serves it and asks the
# OpenAI-compatible API with curl and with the openai Python SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# The test profile's build (dependencies and the engine optimised): shared with `scripts/test.sh`.
cargo build --quiet
model=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/model
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
server_pid=
trap 'kill $registry_pid $server_pid 2>/dev/null; rm -rf "$work"' EXIT
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

echo "== run: Why is the sky blue?"
"$model" run --verbose --max-tokens 96 "$ref" "Why is the sky blue?"

api_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$model" serve --port "$api_port" >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$api_port/health" >/dev/null && break; sleep 0.1; done
echo "== curl http://127.0.0.1:$api_port/v1/chat/completions"
curl -s "http://127.0.0.1:$api_port/v1/chat/completions" -H 'content-type: application/json' \
  -d "{\"model\": \"$ref\", \"max_tokens\": 48, \"messages\": [{\"role\": \"user\", \"content\": \"Say hello in French.\"}]}"
echo
echo "== openai SDK (base_url=http://127.0.0.1:$api_port/v1)"
BASE_URL=http://127.0.0.1:$api_port/v1 MODEL=$ref .venv/bin/python - <<'PY'
import os, openai
client = openai.OpenAI(base_url=os.environ["BASE_URL"], api_key="unused")
stream = client.chat.completions.create(model=os.environ["MODEL"], max_tokens=64, stream=True,
    messages=[{"role": "user", "content": "Give me one fun fact about the ocean."}])
for chunk in stream:
    for choice in chunk.choices:
        print(choice.delta.content or "", end="", flush=True)
print()
PY
