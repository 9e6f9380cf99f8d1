#!/usr/bin/env bash
# Runs the whole test suite: installs what is missing, then unit and integration tests against the real
# registry and the real default model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-tests.sh
# Deployment files (Dockerfiles, compose.yaml, Kubernetes manifests) against their schemas.
scripts/validate-deploy.sh
cargo test --workspace --all-targets -- --test-threads="${TEST_THREADS:-2}"
