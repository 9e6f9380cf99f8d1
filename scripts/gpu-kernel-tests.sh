#!/usr/bin/env bash
# Packs our CUDA kernels' tests for a GPU machine that has a driver but no Rust toolchain (such as the
# device machines sessions borrow): builds the kernels crate's test binary with `--features cuda` here,
# strips it into .gpu/ (ignored by git; about 2.5 MiB) and prints the command to run there. The binary
# needs only the driver's libcuda.so.1; the PTX is embedded and JIT-compiled for whichever GPU it finds.
# On a machine with a GPU and cargo, `cargo test -p model-runner-kernels --features cuda` does the same.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nvcc >/dev/null || scripts/check-cuda.sh
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/cuda}"
binary=$(cargo test -p model-runner-kernels --features cuda --lib --no-run --message-format=json \
  | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "kernels":
        print(m["executable"])')
[[ -n "$binary" ]] || { echo "no test binary was built" >&2; exit 1; }
mkdir -p .gpu
strip -o .gpu/kernels-cuda-tests "$binary"
echo "built .gpu/kernels-cuda-tests; on the GPU machine (carry .gpu):"
echo "  .gpu/kernels-cuda-tests cuda --test-threads=1 --nocapture"
