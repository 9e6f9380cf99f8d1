#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each for a bounded time with libFuzzer; prints, per
# target, the executions (libFuzzer's final stats) and any crash file with its panic message. Exits
# non-zero when a target crashed, ran out of memory or hung. Not part of CI.
#   usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]      (default: 60 s, every target)
# Environment:
#   FUZZ_TARGET_DIR   cargo's target dir for the fuzz build (default fuzz/target)
#   FUZZ_SANITIZER    none (default) or address|leak|memory|thread
#   FUZZ_KEEP_GOING=1 keep fuzzing past crashes (libFuzzer -fork=1 -ignore_crashes=1 ...), to collect several
#   FUZZ_ARGS         more libFuzzer flags, e.g. "-max_len=65536"
#   CARGO_BUILD_JOBS  as for cargo (set it to 1 on a shared machine; the build also runs under nice)
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a C++ compiler (libFuzzer is built from source).
#
# Why `--sanitizer none` by default: the project's toolchain is stable, and sanitizers need nightly's -Z
# flags. Without one, libFuzzer still finds panics (every debug assertion and overflow check is on),
# aborts, hangs (-timeout) and runaway allocations (-rss_limit_mb / -malloc_limit_mb); Rust code needs
# ASan far less than C. With FUZZ_SANITIZER set we allow stable rustc nightly flags (RUSTC_BOOTSTRAP=1).
#
# Corpora grow under fuzz/corpus/<target> (ignored by git), seeded from fuzz/seeds/<target>; crash
# files and the run's log go to fuzz/artifacts/<target>/. Reproduce a crash with
#   fuzz/target/x86_64-unknown-linux-gnu/debug/<target> fuzz/artifacts/<target>/crash-...
# (or `cargo fuzz run --dev --sanitizer none <target> <file>`); `cargo fuzz fmt` prints structured inputs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fuzz="$root/fuzz"
seconds=${1:-60}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
  echo "usage: $0 [SECONDS_PER_TARGET] [TARGET...]" >&2
  exit 2
fi
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz is missing: cargo install cargo-fuzz --locked" >&2; exit 2; }

mapfile -t all < <(sed -n 's/^name = "\(.*\)"$/\1/p' "$fuzz/Cargo.toml" | grep -v '^model-runner-fuzz$\|^fuzz_support$')
targets=("$@")
((${#targets[@]})) || targets=("${all[@]}")
for t in "${targets[@]}"; do
  [[ " ${all[*]} " == *" $t "* ]] || { echo "unknown target $t (have: ${all[*]})" >&2; exit 2; }
done

sanitizer=${FUZZ_SANITIZER:-none}
target_dir=${FUZZ_TARGET_DIR:-$fuzz/target}
triple=$(rustc -vV | sed -n 's/^host: //p')
build=(cargo fuzz build --dev --sanitizer "$sanitizer" --target-dir "$target_dir")
if [[ $sanitizer != none ]] && ! rustc -V | grep -q nightly; then
  export RUSTC_BOOTSTRAP=1
fi
echo "== building ${#targets[@]} target(s) ($sanitizer sanitizer) into $target_dir" >&2
if ((${#targets[@]} == ${#all[@]})); then
  (cd "$root" && nice -n 19 "${build[@]}" >&2)
else
  for t in "${targets[@]}"; do (cd "$root" && nice -n 19 "${build[@]}" "$t" >&2); done
fi

# One core per fuzz process: the engine's thread pool and rayon would spin on all of them.
export MODEL_RUNNER_THREADS=1 RAYON_NUM_THREADS=1 RUST_BACKTRACE=${RUST_BACKTRACE:-1}
flags=(-max_total_time="$seconds" -timeout=20 -rss_limit_mb=3072 -malloc_limit_mb=2048 -max_len=16384
  -print_final_stats=1)
[[ ${FUZZ_KEEP_GOING:-0} == 1 ]] && flags+=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
read -r -a extra <<<"${FUZZ_ARGS:-}"

failed=0
summary=()
for t in "${targets[@]}"; do
  bin="$target_dir/$triple/debug/$t"
  corpus="$fuzz/corpus/$t"
  artifacts="$fuzz/artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  seeds=()
  [[ -d $fuzz/seeds/$t ]] && seeds=("$fuzz/seeds/$t")
  log="$artifacts/fuzz.log"
  echo "== $t: ${seconds}s" >&2
  touch "$artifacts/.started"
  rc=0
  # libFuzzer stops itself after -max_total_time (and a unit after -timeout); the outer timeout only catches
  # a wedged process, generously: under nice on a saturated machine a unit can take 50x its CPU time.
  (cd "$artifacts" && timeout --kill-after=10 $((seconds * 3 + 300)) nice -n 19 "$bin" "${flags[@]}" \
    -artifact_prefix="$artifacts/" "${extra[@]}" "$corpus" "${seeds[@]}") >"$log" 2>&1 || rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  [[ -n $execs ]] || execs=$(grep -o '^#[0-9]*' "$log" | tail -1 | tr -d '#')
  # Crash, leak, OOM and timeout files this run wrote (fork mode does not name them in its log).
  crashes=$(find "$artifacts" -maxdepth 1 -type f -newer "$artifacts/.started" \
    \( -name 'crash-*' -o -name 'leak-*' -o -name 'oom-*' -o -name 'timeout-*' \) | sort)
  line="$t: ${execs:-?} executions, corpus $(find "$corpus" -type f | wc -l) files, exit $rc"
  ((rc == 124 || rc == 137)) && line+=" (killed by the outer timeout: wedged, or starved of CPU)"
  if [[ -n $crashes || $rc -ne 0 ]]; then
    failed=1
    line+=" -- FAILED"
    echo "$line" >&2
    for c in $crashes; do echo "   crash file: $c ($(stat -c %s "$c") bytes)" >&2; done
    # The panic (or libFuzzer's reason) and a few frames, so the owners can fix it from here.
    grep -m 3 -A 6 "panicked at\|ERROR: libFuzzer\|==ERROR\|out-of-memory\|timeout after" "$log" | sed 's/^/   | /' >&2 || true
    echo "   log: $log" >&2
  else
    echo "$line" >&2
  fi
  summary+=("$line")
done
echo "== summary" >&2
printf '%s\n' "${summary[@]}"
exit "$failed"
