#!/usr/bin/env bash
# Llama-3-shaped GGUFs at the sizes people run (random weights, SmolLM2's tokenizer; see
# scripts/synthesize-gguf.py --size), quantized by llama.cpp's own llama-quantize, for measuring speed, memory
# and load time at real scale: `GGUF=$(scripts/synthesize-sizes.sh 1b Q4_K_M) scripts/bench-vs-llamacpp.sh`.
#   usage: scripts/synthesize-sizes.sh SIZE [TYPE]      SIZE: 1b, 3b or 8b; TYPE: Q4_K_M (default), Q5_K_M,
#          Q8_0, Q3_K_M, ... (what llama-quantize takes), or F16
# Files are cached under ~/.cache/model-runner/sizes (the F16 source too: 2.5 GB for 1b, 16 GB for 8b);
# prints the file's path. Needs scripts/setup-tests.sh (the .venv with gguf and numpy).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
size=${1:?usage: $0 1b|3b|8b [TYPE]}
type=${2:-Q4_K_M}
[[ $size =~ ^(1b|3b|8b)$ ]] || { echo "SIZE must be 1b, 3b or 8b" >&2; exit 2; }
[[ $type =~ ^[A-Za-z0-9_]+$ ]] || { echo "bad TYPE: $type" >&2; exit 2; }
dir=${XDG_CACHE_HOME:-$HOME/.cache}/model-runner/sizes
mkdir -p "$dir"
f16=$dir/llama3-$size-F16.gguf
if [[ ! -s $f16 ]]; then
  echo "writing $f16 (random weights, real shape)..." >&2
  "$root/.venv/bin/python" "$root/scripts/synthesize-gguf.py" --family llama3 --size "$size" --type f16 \
    --tokenizer-from "$("$root/scripts/fetch-default-model.sh")" --out "$f16.part"
  mv "$f16.part" "$f16"
fi
[[ $type == F16 ]] && { echo "$f16"; exit 0; }
out=$dir/llama3-$size-$type.gguf
if [[ ! -s $out ]]; then
  bin=$(BUILD_ONLY=1 "$root/scripts/bench-vs-llamacpp.sh")
  echo "quantizing to $type with llama-quantize..." >&2
  "$bin/llama-quantize" "$f16" "$out.part" "$type" "$(nproc)" >"$dir/quantize-$size-$type.log" 2>&1
  mv "$out.part" "$out"
fi
echo "$out"
