#!/usr/bin/env bash
# Regenerates tests/fixtures/*.json from llama.cpp itself: builds the pinned llama-cpp-python (which vendors
# llama.cpp) into a venv outside the repository, then runs scripts/make-reference.py on both real models and
# scripts/make-architecture-reference.py on the synthetic families (tests/fixtures/architectures/).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${REFERENCE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/model-runner/reference-venv}
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import llama_cpp, gguf' 2>/dev/null; then
  python3 -m venv "$venv"
  # gguf and numpy as scripts/setup-tests.sh pins them: both venvs must write the same synthetic files.
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" install -q numpy==2.4.6 gguf==0.19.0 llama-cpp-python==0.3.36
fi
mkdir -p tests/fixtures
"$venv/bin/python" scripts/make-reference.py "$(scripts/fetch-default-model.sh)" tests/fixtures/smollm2-135m-instruct-q4_1.json
"$venv/bin/python" scripts/make-reference.py "$(scripts/fetch-default-model.sh)" tests/fixtures/smollm2-135m-instruct-q4_1-kv-q8_0.json q8_0
"$venv/bin/python" scripts/make-reference.py "$(scripts/fetch-gemma3-270m.sh)" tests/fixtures/gemma3-270m-q4_k_m.json
"$venv/bin/python" scripts/make-architecture-reference.py "$(scripts/fetch-default-model.sh)" tests/fixtures/architectures
"$venv/bin/python" scripts/make-encoder-reference.py tests/fixtures/encoders "$(scripts/fetch-default-model.sh)"
