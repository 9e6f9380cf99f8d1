#!/usr/bin/env bash
# Throughput of model-runner against llama.cpp's llama-server on the same GGUF, in one run on this machine.
# Builds llama-server from the llama.cpp vendored in the pinned llama-cpp-python sdist (PyPI) into a cache
# outside the repository, starts both servers on 127.0.0.1 with the same parallelism, and runs
# `model bench --url OURS --compare LLAMA` at each concurrency.   usage: scripts/bench-vs-llamacpp.sh [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
concurrency=${1:-1,8,16}
parallel=16
cache=${XDG_CACHE_HOME:-$HOME/.cache}/model-runner/llama.cpp
server=$cache/llama_cpp_python-0.3.36/vendor/llama.cpp/build/bin/llama-server
if [[ ! -x $server ]]; then
  mkdir -p "$cache"
  python3 -m venv "$cache/venv"
  "$cache/venv/bin/pip" install -q cmake
  "$cache/venv/bin/pip" download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d "$cache"
  tar xzf "$cache/llama_cpp_python-0.3.36.tar.gz" -C "$cache"
  src=$cache/llama_cpp_python-0.3.36/vendor/llama.cpp
  "$cache/venv/bin/cmake" -S "$src" -B "$src/build" -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release >/dev/null
  "$cache/venv/bin/cmake" --build "$src/build" --target llama-server -j"$(nproc)" >/dev/null
fi
# MODEL_BIN: a `model` binary already built (skips the release build).
if [[ -n ${MODEL_BIN:-} ]]; then
  model=$MODEL_BIN
else
  cargo build --release --quiet
  model=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/model
fi
gguf=$(scripts/fetch-default-model.sh)
home=$(mktemp -d)
trap 'kill $ours $theirs 2>/dev/null; rm -rf "$home"' EXIT
MODEL_RUNNER_HOME=$home "$model" package --gguf "$gguf" ai/smollm2 >/dev/null
free() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
p1=$(free); p2=$(free)
MODEL_RUNNER_HOME=$home "$model" serve --port "$p1" --parallel $parallel --context-size 4096 >/dev/null 2>&1 & ours=$!
"$server" -m "$gguf" --host 127.0.0.1 --port "$p2" -np $parallel -c $((4096 * parallel)) -t "$(nproc)" >/dev/null 2>&1 & theirs=$!
for p in $p1 $p2; do for _ in $(seq 300); do curl -sf "http://127.0.0.1:$p/health" >/dev/null && break; sleep 0.2; done; done
"$model" bench --url "http://127.0.0.1:$p1/v1" --compare "http://127.0.0.1:$p2/v1" --model ai/smollm2 \
  --concurrency "$concurrency" --requests 32 --max-tokens 96
