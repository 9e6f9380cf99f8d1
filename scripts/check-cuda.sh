#!/usr/bin/env bash
# Compiles the CUDA path without a GPU: installs Debian's nvidia-cuda-toolkit (11.8, from `contrib
# non-free`, added to apt's sources if missing), then type-checks the whole workspace with `--features
# cuda` (which runs nvcc over candle's kernels and ours), and builds and runs our kernels' CUDA tests: on a
# machine without a GPU each says "skipped: no CUDA device" and passes; with one, they compare every
# kernel with its CPU twin.
#
# CUDA_COMPUTE_CAP picks the GPU generation: 80 by default (CUDA 11.8 cannot target sm_90a; the
# Dockerfile builds with CUDA 12 for Hopper). The CUDA build keeps its own target directory
# (CUDA_TARGET_DIR, default target/cuda under CARGO_TARGET_DIR or the repository) so that its different
# feature set does not evict the CPU build's artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvcc >/dev/null; then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  # deb822 sources (bookworm's default) or a classic sources.list.
  if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    $sudo sed -i -E '/^Components:/{/contrib/!s/$/ contrib/;/non-free( |$)/!s/$/ non-free/}' \
      /etc/apt/sources.list.d/debian.sources
  elif [[ -f /etc/apt/sources.list ]]; then
    $sudo sed -i -E '/^deb /{/contrib/!s/$/ contrib/;/ non-free( |$)/!s/$/ non-free/}' /etc/apt/sources.list
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nvidia-cuda-toolkit \
    >/dev/null
fi
nvcc --version | tail -1

export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
# cudaforge, which runs nvcc for candle-kernels' build script and ours, uses half the cores by default: on
# two cores one file at a time, 13 minutes of a cold check for candle's kernels; on both, 5.
export CUDAFORGE_THREADS="${CUDAFORGE_THREADS:-$(nproc)}"
export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-${CARGO_TARGET_DIR:-$PWD/target}/cuda}"
cargo check --workspace --all-targets --features cuda
cargo test -p model-runner-kernels --features cuda --lib -- cuda
