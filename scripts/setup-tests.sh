#!/usr/bin/env bash
# Installs what the test suite needs beyond scripts/setup.sh (which it runs first): skopeo, Debian's
# Chromium and its WebDriver, the second real model, the real clients the tests drive, axe-core, gguf and
# numpy, Claude Code, and the MCP reference servers. Idempotent: what is present is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

need=()
command -v skopeo >/dev/null || need+=(skopeo)
# The web console's browser tests: Debian's Chromium and its WebDriver.
[[ -x /usr/bin/chromium ]] || need+=(chromium)
[[ -x /usr/bin/chromedriver ]] || need+=(chromium-driver)
if ((${#need[@]})); then
  sudo=""; [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
scripts/fetch-gemma3-270m.sh >/dev/null
# A real XLM-R Unigram vocabulary (llama.cpp's own test file) for the XLM-R families of tests/encoders.rs.
scripts/fetch-xlmr-vocab.sh >/dev/null

# The real clients the tests drive: the openai and anthropic SDKs and the OpenAI Agents SDK; Selenium drives
# Chromium in the web console's tests; gguf with numpy write the small GGUFs of tests/architectures.rs
# (pinned: the fixtures record those files' bytes).
if ! .venv/bin/python -c 'import openai, anthropic, agents, jsonschema, selenium' 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check 'openai>=1.50,<4' 'anthropic>=0.40,<1' \
    'openai-agents>=0.3,<1' 'jsonschema>=4,<5' 'selenium>=4.20,<5'
fi
# The MCP Python SDK's authorization server routes run tests/python/mcp_oauth_server.py (the OAuth tests).
if ! .venv/bin/python -c 'import uvicorn, mcp.server.mcpserver, mcp.server.auth.routes' 2>/dev/null; then
  .venv/bin/pip install -q --disable-pip-version-check 'mcp>=2.3,<3' 'uvicorn>=0.30'
fi
if [[ $(.venv/bin/python -c 'import gguf, numpy, importlib.metadata as m; print(m.version("gguf"), numpy.__version__)' 2>/dev/null) != "0.19.0 2.4.6" ]]; then
  .venv/bin/pip install -q --disable-pip-version-check gguf==0.19.0 numpy==2.4.6
fi

# axe-core, the accessibility checker the console's tests run in the page (npm, pinned, outside the repo).
console_dir="${MODEL_RUNNER_CACHE:-$HOME/.cache/model-runner}/console"
if [[ ! -f "$console_dir/node_modules/axe-core/axe.min.js" ]]; then
  mkdir -p "$console_dir"
  [[ -f "$console_dir/package.json" ]] || echo '{"name":"model-runner-console-tests","private":true}' >"$console_dir/package.json"
  npm install --prefix "$console_dir" --save-exact --no-audit --no-fund --loglevel=error axe-core@4.11.1 >/dev/null
fi

# Claude Code, whose `claude mcp list` checks a config that `model mcp client connect claude-code` wrote
# (npm, pinned, outside the repo, from the registry npm is configured with; a native binary).
CLAUDE_CODE_VERSION=2.1.332
claude_dir="${MODEL_RUNNER_CACHE:-$HOME/.cache/model-runner}/claude-code"
if [[ "$("$claude_dir/node_modules/.bin/claude" --version 2>/dev/null)" != "$CLAUDE_CODE_VERSION "* ]]; then
  mkdir -p "$claude_dir"
  [[ -f "$claude_dir/package.json" ]] || echo '{"name":"model-runner-claude-code-tests","private":true}' >"$claude_dir/package.json"
  npm install --prefix "$claude_dir" --registry "$(npm config get registry)" --save-exact --no-audit --no-fund \
    --loglevel=error "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >/dev/null
fi

# MCP servers and clients for the gateway's tests (npm and PyPI, pinned, cached outside the repo).
scripts/setup-mcp.sh >/dev/null
