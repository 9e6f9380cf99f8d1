#!/usr/bin/env bash
# model-runner against llama.cpp on the same GGUF, in one run on this machine, as a table of ratios.
#
# Builds llama-server and llama-bench from the llama.cpp vendored in the pinned llama-cpp-python sdist (PyPI)
# into a cache outside the repository (native CPU build, as llama.cpp ships it), then measures:
#   1. the engines alone: llama-bench -p 512 -n 128 against `model bench --local` (prompt 512, decode 128;
#      PROMPT_TOKENS=N measures a prompt of N tokens instead: `-p N`, `--prompt-tokens N`);
#   2. both servers on 127.0.0.1, restarted for each concurrency with as many slots as clients and warmed
#      with one untimed completion each (llama-server is loaded before /health answers; ours loads lazily):
#      `model bench --url OURS --compare LLAMA` (streaming chat, a distinct prompt per request, max_tokens with ignore_eos),
#      and each server's peak RSS;
#   3. load to first token: each server started with one slot of LOAD_CONTEXT tokens (default 8192), timed
#      from its start to the end of a one-token completion (our server loads the model on that request,
#      llama-server before its /health answers), and its peak RSS then.
# usage: scripts/bench-vs-llamacpp.sh [CONCURRENCY]     (default 1,8,16; '' measures the engines alone)
#   4. with LONG_PROMPT=1, a long prompt: each server started with one slot of LOAD_CONTEXT tokens and warmed,
#      then one completion (one token) of a prompt of about three quarters of that context, timed, and each
#      server's peak RSS with it.
#   LOAD_ONLY=1 runs only steps 3 and 4 (an 8B model's engine runs take long on a small machine);
#   BUILD_ONLY=1 builds llama.cpp's tools (llama-server, llama-bench, llama-quantize) and stops;
#   MODEL_BIN=path/to/model skips our release build; BENCH_JSON=FILE also writes the raw figures;
#   GGUF=path/to/model.gguf benchmarks another model (default: SmolLM2-135M-Instruct Q4_1; real sizes:
#   scripts/synthesize-sizes.sh);
#   DEVICE=cuda runs both on the first NVIDIA GPU: llama.cpp built with GGML_CUDA and every layer offloaded
#   (-ngl 99), ours built with --features cuda and run with --device cuda (needs nvcc; CUDA_COMPUTE_CAP).
set -euo pipefail
cd "$(dirname "$0")/.."
concurrency=${1-1,8,16}
threads=$(nproc)
device=${DEVICE:-cpu}
case $device in
  cpu) build_dir=build; cmake_device=(); offload=(); features=() ;;
  cuda) build_dir=build-cuda
    cmake_device=(-DGGML_CUDA=ON "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_COMPUTE_CAP:-native}")
    offload=(-ngl 99); features=(--features cuda) ;;
  *) echo "DEVICE must be cpu or cuda" >&2; exit 2 ;;
esac
cache=${XDG_CACHE_HOME:-$HOME/.cache}/model-runner/llama.cpp
src=$cache/llama_cpp_python-0.3.36/vendor/llama.cpp
server=$src/$build_dir/bin/llama-server
llama_bench=$src/$build_dir/bin/llama-bench
quantize=$src/$build_dir/bin/llama-quantize
if [[ ! -x $server || ! -x $llama_bench || ! -x $quantize ]]; then
  mkdir -p "$cache"
  [[ -x $cache/venv/bin/cmake ]] || { python3 -m venv "$cache/venv" && "$cache/venv/bin/pip" install -q cmake; }
  # The whole tree: scripts/fetch-xlmr-vocab.sh extracts one file of the same sdist into the same place.
  [[ -f $src/CMakeLists.txt ]] || {
    sdist=$cache/llama_cpp_python-0.3.36.tar.gz
    [[ -s $sdist ]] || {
      # The sdist itself, found through the simple index pip is configured with (`pip download` would
      # build its build dependencies from source just to read its metadata). No index host is named here.
      pip=$cache/venv/bin/pip
      index=${PIP_INDEX_URL:-$("$pip" config get global.index-url 2>/dev/null ||
        "$cache/venv/bin/python" -c 'from pip._internal.models.index import PyPI; print(PyPI.simple_url)')}
      url=$(curl -sf -H "Accept: application/vnd.pypi.simple.v1+json" "${index%/}/llama-cpp-python/" |
        python3 -c 'import json,sys; print([f["url"] for f in json.load(sys.stdin)["files"] if f["filename"] == "llama_cpp_python-0.3.36.tar.gz"][0])')
      curl -sfL -o "$sdist.part" "$url"
      mv "$sdist.part" "$sdist"
    }
    tar xzf "$sdist" -C "$cache"
  }
  "$cache/venv/bin/cmake" -S "$src" -B "$src/$build_dir" -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DCMAKE_BUILD_TYPE=Release ${cmake_device[@]+"${cmake_device[@]}"} >"$cache/$build_dir.log" 2>&1
  "$cache/venv/bin/cmake" --build "$src/$build_dir" --target llama-server llama-bench llama-quantize -j"$threads" >>"$cache/$build_dir.log" 2>&1
fi
[[ -z ${BUILD_ONLY:-} ]] || { echo "$src/$build_dir/bin"; exit 0; }
if [[ -n ${MODEL_BIN:-} ]]; then
  model=$MODEL_BIN
else
  cargo build --release --quiet --bin model ${features[@]+"${features[@]}"}
  model=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/model
fi
gguf=${GGUF:-$(scripts/fetch-default-model.sh)}
work=$(mktemp -d)
ours="" theirs=""
trap 'kill $ours $theirs 2>/dev/null || true; rm -rf "$work"' EXIT
export MODEL_RUNNER_HOME=$work/home
"$model" package --gguf "$gguf" bench/model >/dev/null 2>&1
# The store's fresh copy written back to disk before anything is timed (its writeback would compete).
sync

load_only=${LOAD_ONLY:-0}
prompt_tokens=${PROMPT_TOKENS:-512}
[[ $prompt_tokens =~ ^[1-9][0-9]{0,4}$ ]] || { echo "PROMPT_TOKENS must be a number of tokens" >&2; exit 2; }
[[ $load_only == 1 ]] && concurrency=""
if [[ $load_only != 1 ]]; then
  echo "engines alone on $device (prompt $prompt_tokens, decode 128, $threads threads)..." >&2
  # llama.cpp steps a prompt in batches of 512 (its -ub) however long; ours takes it in one step.
  "$llama_bench" -m "$gguf" -p "$prompt_tokens" -n 128 -t "$threads" ${offload[@]+"${offload[@]}"} -o json \
    >"$work/llama-bench.json" 2>/dev/null
  "$model" bench --local bench/model --device "$device" --prompt-tokens "$prompt_tokens" --json >"$work/ours-local.json"
fi

# Per concurrency level, both servers start fresh with as many slots as clients (llama-server's -np, our
# --parallel) and a 4096-token context per slot; their peak RSS is read at the end of each level.
warm() { # PORT MODEL: one untimed one-token completion
  curl -sf "http://127.0.0.1:$1/v1/completions" -H 'content-type: application/json' \
    -d "{\"model\": \"$2\", \"prompt\": \"Hello\", \"max_tokens\": 1}" >/dev/null
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss() { awk '/VmHWM/ {print $2}' "/proc/$1/status"; }
echo "[" >"$work/http.json"; echo "[" >"$work/rss.json"; first=1
for clients in ${concurrency//,/ }; do
  echo "servers, $clients client(s)..." >&2
  p1=$(free_port); p2=$(free_port)
  "$model" serve --port "$p1" --parallel "$clients" --context-size 4096 --device "$device" >"$work/ours.log" 2>&1 & ours=$!
  "$server" -m "$gguf" --host 127.0.0.1 --port "$p2" -np "$clients" -c $((4096 * clients)) -t "$threads" \
    ${offload[@]+"${offload[@]}"} >"$work/theirs.log" 2>&1 & theirs=$!
  for p in $p1 $p2; do
    for _ in $(seq 300); do curl -sf "http://127.0.0.1:$p/health" >/dev/null && break; sleep 0.2; done
  done
  # Both warm before the clock starts: llama-server loads the model and runs a warm-up decode before /health
  # answers, ours loads it on the first request (step 3 times that load on its own). Without this, our
  # first wave's time to first token holds the whole load, and at 16 clients and 32 requests that wave
  # is half the samples, so it sets the p50.
  warm "$p1" bench/model; warm "$p2" model
  "$model" bench --url "http://127.0.0.1:$p1/v1" --compare "http://127.0.0.1:$p2/v1" --model bench/model \
    --concurrency "$clients" --requests 32 --max-tokens 96 --json >"$work/level.json"
  [[ $first == 1 ]] || { echo "," >>"$work/http.json"; echo "," >>"$work/rss.json"; }
  python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1])))[1:-1])' "$work/level.json" >>"$work/http.json"
  echo "{\"clients\": $clients, \"ours_kib\": $(rss $ours), \"theirs_kib\": $(rss $theirs)}" >>"$work/rss.json"
  kill $ours $theirs; wait $ours $theirs 2>/dev/null || true; first=0
done
echo "]" >>"$work/http.json"; echo "]" >>"$work/rss.json"

load_context=${LOAD_CONTEXT:-8192}
echo "load to first token, one slot x $load_context..." >&2
since() { python3 -c 'import sys, time; print(round(time.time() - float(sys.argv[1]), 2))' "$1"; }
first_token() { # PORT MODEL: waits for /health, then one completion of one token
  for _ in $(seq 3000); do curl -sf "http://127.0.0.1:$1/health" >/dev/null && break; sleep 0.1; done
  curl -sf "http://127.0.0.1:$1/v1/completions" -H 'content-type: application/json' \
    -d "{\"model\": \"$2\", \"prompt\": \"Hello\", \"max_tokens\": 1}" >/dev/null
}
p1=$(free_port); start=$(date +%s.%N)
"$model" serve --port "$p1" --parallel 1 --context-size "$load_context" --device "$device" >"$work/ours.log" 2>&1 & ours=$!
first_token "$p1" bench/model; ours_s=$(since "$start"); ours_kib=$(rss $ours)
kill $ours; wait $ours 2>/dev/null || true
p2=$(free_port); start=$(date +%s.%N)
"$server" -m "$gguf" --host 127.0.0.1 --port "$p2" -np 1 -c "$load_context" -t "$threads" \
  ${offload[@]+"${offload[@]}"} >"$work/theirs.log" 2>&1 & theirs=$!
first_token "$p2" model; theirs_s=$(since "$start"); theirs_kib=$(rss $theirs)
kill $theirs; wait $theirs 2>/dev/null || true
echo "{\"context\": $load_context, \"ours_s\": $ours_s, \"theirs_s\": $theirs_s, \"ours_kib\": $ours_kib, \"theirs_kib\": $theirs_kib}" >"$work/load.json"

echo "{}" >"$work/long.json"
if [[ ${LONG_PROMPT:-0} == 1 ]]; then
  words=$((load_context * 3 / 4))
  echo "a long prompt (~$words words) in one slot x $load_context..." >&2
  long_prompt() { # PORT MODEL: one completion of one token; prints its prompt's token count
    python3 -c 'import json, sys
words = "river stone light garden paper window music winter market forest".split()
prompt = " ".join(words[i % len(words)] for i in range(int(sys.argv[2])))
print(json.dumps({"model": sys.argv[1], "prompt": prompt, "max_tokens": 1}))' "$2" "$words" >"$work/long-body.json"
    curl -sf "http://127.0.0.1:$1/v1/completions" -H 'content-type: application/json' -d @"$work/long-body.json" |
      python3 -c 'import json, sys; print(json.load(sys.stdin)["usage"]["prompt_tokens"])'
  }
  p1=$(free_port)
  "$model" serve --port "$p1" --parallel 1 --context-size "$load_context" --device "$device" >"$work/ours.log" 2>&1 & ours=$!
  first_token "$p1" bench/model; start=$(date +%s.%N)
  ours_tokens=$(long_prompt "$p1" bench/model); ours_s=$(since "$start"); ours_kib=$(rss $ours)
  kill $ours; wait $ours 2>/dev/null || true
  p2=$(free_port)
  "$server" -m "$gguf" --host 127.0.0.1 --port "$p2" -np 1 -c "$load_context" -t "$threads" \
    ${offload[@]+"${offload[@]}"} >"$work/theirs.log" 2>&1 & theirs=$!
  first_token "$p2" model; start=$(date +%s.%N)
  theirs_tokens=$(long_prompt "$p2" model); theirs_s=$(since "$start"); theirs_kib=$(rss $theirs)
  kill $theirs; wait $theirs 2>/dev/null || true
  echo "{\"context\": $load_context, \"ours_tokens\": $ours_tokens, \"theirs_tokens\": $theirs_tokens, \"ours_s\": $ours_s, \"theirs_s\": $theirs_s, \"ours_kib\": $ours_kib, \"theirs_kib\": $theirs_kib}" >"$work/long.json"
fi

python3 - "$work" "${BENCH_JSON:-}" "$prompt_tokens" <<'PY'
import json, sys, os
work, out, prompt = sys.argv[1], sys.argv[2], int(sys.argv[3])
pp = f"pp{prompt}"
engines = os.path.exists(f"{work}/ours-local.json")
theirs_local = json.load(open(f"{work}/llama-bench.json")) if engines else []
ours_local = {r["test"]: r for r in json.load(open(f"{work}/ours-local.json"))} if engines else {}
http = json.load(open(f"{work}/http.json"))
rss = json.load(open(f"{work}/rss.json"))
load = json.load(open(f"{work}/load.json"))
long = json.load(open(f"{work}/long.json"))
tl = {(pp if r["n_prompt"] else "tg128"): r["avg_ts"] for r in theirs_local}
rows = []
def row(name, ours, theirs, target=None, higher=True):
    ratio = ours / theirs if theirs else float("nan")
    if target is None:
        rows.append((name, ours, theirs, ratio, "—", "—"))
        return
    met = ratio >= target if higher else ratio <= target
    rows.append((name, ours, theirs, ratio, ("≥" if higher else "≤") + f"{target:g}", "yes" if met else "no"))
if engines:
    row(f"prompt {prompt}, tok/s (engine)", ours_local[pp]["tokens_per_second"], tl[pp], 1.0)
    row("decode 1 stream, tok/s (engine)", ours_local["tg128"]["tokens_per_second"], tl["tg128"], 1.2)
for a, b in zip(http[0::2], http[1::2]):
    c = a["concurrency"]
    row(f"HTTP {c} client(s), aggregate tok/s", a["tokens_per_second"], b["tokens_per_second"], 1.5 if c >= 8 else None)
    row(f"HTTP {c} client(s), TTFT p50 ms", a["ttft_ms_p50"], b["ttft_ms_p50"], 0.5 if c >= 8 else None, higher=False)
    if a["errors"] or b["errors"]:
        print(f"errors at {c} clients: ours {a['errors']}, llama-server {b['errors']}; first: "
              f"ours {a.get('first_error')}, llama-server {b.get('first_error')}", file=sys.stderr)
for r in rss:
    row(f"peak RSS, MiB ({r['clients']} slots x 4096 context)", r["ours_kib"] / 1024, r["theirs_kib"] / 1024, 1.1, higher=False)
row(f"load to first token, s (1 slot x {load['context']})", load["ours_s"], load["theirs_s"], 1.0, higher=False)
row(f"peak RSS after it, MiB (1 slot x {load['context']})", load["ours_kib"] / 1024, load["theirs_kib"] / 1024, 1.0, higher=False)
if long:
    n = long["ours_tokens"]
    if n != long["theirs_tokens"]:
        print(f"the long prompt's token counts differ: ours {n}, llama.cpp {long['theirs_tokens']}", file=sys.stderr)
    row(f"a {n}-token prompt, s to its token (1 slot x {long['context']})", long["ours_s"], long["theirs_s"], 1.0, higher=False)
    row(f"peak RSS with it, MiB (1 slot x {long['context']})", long["ours_kib"] / 1024, long["theirs_kib"] / 1024, 1.0, higher=False)
if engines:
    print(f"device: {ours_local[pp].get('device')}, CPU kernels: {ours_local[pp].get('kernels')}, threads: {ours_local[pp].get('threads')}")
print("| measure | model-runner | llama.cpp | ratio | target | met |")
print("|---|---|---|---|---|---|")
for name, o, t, r, target, met in rows:
    print(f"| {name} | {o:.1f} | {t:.1f} | x{r:.2f} | {target} | {met} |")
if out:
    json.dump({"llama_bench": theirs_local, "ours_local": list(ours_local.values()), "http": http, "rss": rss, "load": load, "long_prompt": long},
              open(out, "w"), indent=2)
PY
