#!/usr/bin/env bash
# Runs the kernels crate's tests (the NEON paths against the scalar one) for AArch64 under qemu-user, on
# an x86-64 Debian machine: cross gcc and qemu from apt, the target's std from rustup. qemu's default CPU
# has the dot-product extension, so both NEON levels run; a second run on a Cortex-A72 (no `sdot`) checks
# that the level is not offered where the instruction is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if ((${#need[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
rustup target list --installed | grep -q '^aarch64-unknown-linux-gnu$' || rustup target add aarch64-unknown-linux-gnu
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
cargo test -p model-runner-kernels --target aarch64-unknown-linux-gnu
QEMU_CPU=cortex-a72 cargo test -p model-runner-kernels --target aarch64-unknown-linux-gnu
