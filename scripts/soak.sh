#!/usr/bin/env bash
# Soak test: the real server under a steady mixed load for MINUTES, watched for leaks. Starts Debian's
# docker-registry and `model serve` (with an MCP gateway in front of the reference servers the tests use)
# on loopback ports, packages the default model and pushes it (plus small artifacts for pull/delete cycles)
# to the registry, pulls the model into the server's store, then runs scripts/soak.py: CLIENTS (16)
# clients mixing chat (plain, streamed, streams dropped midway), tool calls, MCP chat, direct /mcp calls,
# pulls and unloads, sampling RSS, fds, MCP processes and KV blocks every 10 s. It fails (exit 1) on error
# responses beyond 503, RSS growing more than 5% from the 2nd to the last quarter, KV blocks not back to
# the baseline once idle, MCP processes left after their idle stop, or fds left open.
#   usage: scripts/soak.sh [MINUTES]        (default 20)
# Environment: CLIENTS (16), SOAK_NICE (0; the server and clients' nice level), SOAK_KEEP=1 keeps the
# work dir (logs, samples in report.json), MODEL_RUNNER_THREADS as for the server.
# Needs: scripts/setup-tests.sh done (docker-registry, .venv, the MCP servers).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
minutes=${1:-20}
[[ $minutes =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "usage: $0 [MINUTES]" >&2; exit 2; }
clients=${CLIENTS:-16}
nice_level=${SOAK_NICE:-0}
mcp_idle=20

target_dir=${CARGO_TARGET_DIR:-$root/target}
model=$target_dir/release/model
[[ -x $model ]] || model=$target_dir/debug/model
if [[ ! -x $model ]]; then
  echo "== building model (cargo build, the test profile)" >&2
  (cd "$root" && cargo build --quiet --bin model)
fi
registry_bin=$(command -v docker-registry || command -v registry || true)
[[ -n $registry_bin ]] || { echo "docker-registry is missing: scripts/setup.sh installs it" >&2; exit 2; }
mcp_env=${MODEL_RUNNER_CACHE:-$HOME/.cache/model-runner}/mcp/env.sh
[[ -f $mcp_env ]] || "$root/scripts/setup-mcp.sh" >&2
# shellcheck disable=SC1090
source "$mcp_env"
python=$root/.venv/bin/python
[[ -x $python ]] || python=python3
gguf=$("$root/scripts/fetch-default-model.sh")

work=$(mktemp -d)
registry_pid= server_pid=
exec 4>&2  # the caller's stderr, for messages while setup's output goes to setup.log
cleanup() {
  local status=$?
  if ((status != 0)) && [[ -f $work/setup.log && ! -f $work/report.json ]]; then
    echo "soak set-up failed; setup.log ends:" >&4; tail -15 "$work/setup.log" >&4
  fi
  [[ -n $server_pid ]] && kill -TERM "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null || true
  [[ -n $registry_pid ]] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null || true
  if [[ ${SOAK_KEEP:-0} == 1 ]]; then echo "work dir kept: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on 127.0.0.1:$1" >&2; return 1
}

# The registry, configured as tests/common/mod.rs does (filesystem storage, deletes on, loopback only).
reg_port=$(free_port)
cat >"$work/registry.yml" <<YAML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/registry}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$reg_port}
YAML
"$registry_bin" serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
registry_pid=$!
wait_port "$reg_port"

echo "== packaging and pushing to 127.0.0.1:$reg_port" >&2
ref=127.0.0.1:$reg_port/ai/smollm2:soak
# Transfer progress goes to setup.log (kept with SOAK_KEEP=1).
exec 3>&2 2>>"$work/setup.log"
MODEL_RUNNER_HOME=$work/publisher "$model" package --gguf "$gguf" --push "$ref" >/dev/null
# Small artifacts for the pull/delete cycles: four distinct blobs under one reference per client, so that
# clients pull and delete shared blobs concurrently (the store's gc lock at work).
pull_refs=()
for i in $(seq 0 3); do
  python3 - "$work/pull$i.gguf" "$i" <<'PY'
import struct, sys, random
path, seed = sys.argv[1], int(sys.argv[2])
def s(x): b = x.encode(); return struct.pack("<Q", len(b)) + b
meta = [("general.architecture", 8, s("llama")), ("general.name", 8, s(f"soak-{seed}"))]
out = struct.pack("<IIQQ", 0x46554747, 3, 1, len(meta))
for k, t, v in meta: out += s(k) + struct.pack("<I", t) + v
out += s("blob.weight") + struct.pack("<I", 1) + struct.pack("<Q", 1 << 18) + struct.pack("<IQ", 0, 0)
out += b"\0" * ((-len(out)) % 32)
out += random.Random(seed).randbytes(4 << 20)
open(path, "wb").write(out)
PY
  MODEL_RUNNER_HOME=$work/publisher "$model" package --gguf "$work/pull$i.gguf" \
    --push "127.0.0.1:$reg_port/soak/blob$i:latest" >/dev/null
done
for c in $(seq 0 $((clients - 1))); do
  MODEL_RUNNER_HOME=$work/publisher "$model" tag "127.0.0.1:$reg_port/soak/blob$((c % 4)):latest" \
    "127.0.0.1:$reg_port/soak/client$c:latest" >/dev/null
  MODEL_RUNNER_HOME=$work/publisher "$model" push "127.0.0.1:$reg_port/soak/client$c:latest" >/dev/null
  pull_refs+=("127.0.0.1:$reg_port/soak/client$c:latest")
done
MODEL_RUNNER_HOME=$work/store "$model" pull "$ref" >/dev/null
exec 2>&3 3>&-

# The MCP reference servers as tests/mcp.rs starts them, stopped after $mcp_idle s idle.
cat >"$work/mcp.json" <<JSON
{"mcpServers": {
   "everything": {"command": "$MCP_NODE", "args": ["$MCP_SERVER_EVERYTHING_JS", "stdio"], "idleTimeoutSecs": $mcp_idle},
   "time": {"command": "$MCP_SERVER_TIME_BIN", "args": ["--local-timezone", "UTC"], "idleTimeoutSecs": $mcp_idle}},
 "gateway": {"maxRounds": 2}}
JSON
api_port=$(free_port)
MODEL_RUNNER_HOME=$work/store nice -n "$nice_level" "$model" serve --host 127.0.0.1 --port "$api_port" \
  --mcp-config "$work/mcp.json" --keep-alive 600 >"$work/serve.log" 2>&1 &
server_pid=$!
wait_port "$api_port"
echo "== soak: $minutes min, $clients clients, server pid $server_pid on 127.0.0.1:$api_port ($model)" >&2

rc=0
BASE=http://127.0.0.1:$api_port MODEL=$ref PULL_REFS="${pull_refs[*]}" SERVER_PID=$server_pid \
  MINUTES=$minutes CLIENTS=$clients MCP_IDLE_SECS=$mcp_idle REPORT=$work/report.json \
  nice -n "$nice_level" "$python" "$root/scripts/soak.py" || rc=$?
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "FAIL: the server died during the soak; its log ends:" >&2
  tail -20 "$work/serve.log" >&2
  rc=1
fi
if grep -q "panicked at" "$work/serve.log"; then
  echo "FAIL: the server log has panics:" >&2
  grep -m 5 -A 2 "panicked at" "$work/serve.log" >&2
  rc=1
fi
# SIGTERM: the server and every MCP server it started must be gone.
kill -TERM "$server_pid" 2>/dev/null || true
for _ in $(seq 200); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server_pid" 2>/dev/null; then echo "FAIL: the server outlived SIGTERM by 20 s" >&2; rc=1; fi
wait "$server_pid" 2>/dev/null || true
server_pid=
exit "$rc"
