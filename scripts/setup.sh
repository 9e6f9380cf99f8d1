#!/usr/bin/env bash
# Installs what the quickstart needs on a fresh Debian machine: the CNCF distribution registry, curl and
# Python's venv, the `openai` SDK in .venv, and the default model. What only the tests need is in
# scripts/setup-tests.sh. Idempotent: what is present is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[[ -x /usr/bin/docker-registry ]] || need+=(docker-registry)
command -v curl >/dev/null || need+=(curl)
command -v python3 >/dev/null || need+=(python3 python3-venv)
if ((${#need[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is required (https://rustup.rs)" >&2; exit 1; }
scripts/fetch-default-model.sh >/dev/null

# The OpenAI SDK the quickstart asks the server with.
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c 'import openai' 2>/dev/null; then
  [[ -x .venv/bin/python ]] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check 'openai>=1.50,<4'
fi
