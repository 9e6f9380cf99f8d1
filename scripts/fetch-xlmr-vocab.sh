#!/usr/bin/env bash
# Prints the path of a real XLM-RoBERTa Unigram vocabulary in GGUF form (250048 pieces, scores, the
# precompiled charsmap: what bge-m3 and bge-reranker-v2-m3 carry): llama.cpp's own test vocabulary
# models/ggml-vocab-nomic-bert-moe.gguf, from the sdist of the pinned llama-cpp-python (0.3.36), which
# scripts/bench-vs-llamacpp.sh and the reference venv use too. Idempotent; the file is checksummed.
set -euo pipefail
cache=${XDG_CACHE_HOME:-$HOME/.cache}/model-runner/llama.cpp
sdist=llama_cpp_python-0.3.36
file=$cache/$sdist/vendor/llama.cpp/models/ggml-vocab-nomic-bert-moe.gguf
want=90a6746926454784a98389ad36a36d89bc9cfc81db9cb0f33c941bcc959fe5f9
if [[ ! -f $file ]]; then
  mkdir -p "$cache"
  if [[ ! -s $cache/$sdist.tar.gz ]]; then
    # The sdist through the simple index pip is configured with; no index host is named here.
    index=${PIP_INDEX_URL:-$(python3 -m pip config get global.index-url 2>/dev/null ||
      python3 -c 'from pip._internal.models.index import PyPI; print(PyPI.simple_url)')}
    url=$(curl -sf -H "Accept: application/vnd.pypi.simple.v1+json" "${index%/}/llama-cpp-python/" |
      python3 -c 'import json,sys; print([f["url"] for f in json.load(sys.stdin)["files"] if f["filename"] == "llama_cpp_python-0.3.36.tar.gz"][0])')
    curl -sfL -o "$cache/$sdist.tar.gz.part" "$url" >&2
    mv "$cache/$sdist.tar.gz.part" "$cache/$sdist.tar.gz"
  fi
  tar xzf "$cache/$sdist.tar.gz" -C "$cache" "$sdist/vendor/llama.cpp/models/ggml-vocab-nomic-bert-moe.gguf"
fi
echo "$want  $file" | sha256sum -c --status || { echo "checksum mismatch for $file" >&2; exit 1; }
echo "$file"
