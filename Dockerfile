# syntax=docker/dockerfile:1
# model-runner for CPUs:
#   docker build -t model-runner .
#   docker run -p 12434:12434 -v models:/models model-runner
# The kernels pick AVX-512 VNNI, AVX2 or scalar code at run time, so the image is portable: no target-cpu.

# 1.95, not the crate's rust-version: the locked graph (hf-hub -> hf-xet -> sysinfo 0.39) needs it.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# .cargo/config.toml builds for the developer's own CPU (target-cpu=native); an image must run on any
# x86-64 node, and our kernels pick their instruction set at run time. RUSTFLAGS overrides the config.
ENV RUSTFLAGS=""
# The cache mounts keep crates and the target directory between builds (the release profile is fat LTO,
# so a cold build is slow); the binary is copied out in the same step because the mount does not outlive it.
RUN --mount=type=cache,id=model-runner-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=model-runner-target-cpu,target=/src/target \
    cargo build --release --locked --bin model \
 && install -m 0755 target/release/model /usr/local/bin/model

FROM debian:bookworm-slim
# curl is for HEALTHCHECK only: `model` has no health subcommand.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# /models is created owned by the user so that a fresh named volume is copied up writable for it.
# Registry credentials, if any, go in /home/model/.docker/config.json.
RUN useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin model \
 && install -d -o model -g model /models
COPY --from=build /usr/local/bin/model /usr/local/bin/model
ENV MODEL_RUNNER_HOME=/models
VOLUME /models
# Numeric, so that Kubernetes' runAsNonRoot can verify it without a runAsUser.
USER 1000:1000
EXPOSE 12434
# /health is the one route that needs no API key, so this works with --api-key too.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["sh", "-c", "curl -fsS http://127.0.0.1:${MODEL_RUNNER_PORT:-12434}/health >/dev/null"]
ENTRYPOINT ["model"]
CMD ["serve", "--host", "0.0.0.0"]
