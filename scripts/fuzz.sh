#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs every libFuzzer target of a fuzz build (MSM_FUZZ=ON; `make fuzz` makes one) for
# FUZZ_SECONDS each, on a fresh working corpus seeded from tests/fuzz/corpus/<name>/, then
# prints one row per target. Exits non-zero when any target found a crash, leak, timeout or
# out-of-memory; the input that did it is kept in <build>/artifacts/<name>/.
#
#   scripts/fuzz.sh [BUILD_DIR [NAME...]]     (NAME: json_parse for fuzz_json_parse)
#
# Environment: FUZZ_SECONDS (60), FUZZ_TIMEOUT (10: seconds one input may take),
# FUZZ_RSS_MB (2048), FUZZ_ARGS (more libFuzzer flags).
set -uo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
build="${1:-build-fuzz}"
shift $(($# > 0 ? 1 : 0))
seconds="${FUZZ_SECONDS:-60}"
timeout_s="${FUZZ_TIMEOUT:-10}"
rss_mb="${FUZZ_RSS_MB:-2048}"
read -r -a extra <<<"${FUZZ_ARGS:-}"

case "$seconds" in
'' | *[!0-9]*)
    echo "fuzz: FUZZ_SECONDS must be a whole number of seconds, not '$seconds'" >&2
    exit 2
    ;;
esac
bin_dir="$build/tests/fuzz"
if [ ! -d "$bin_dir" ]; then
    echo "fuzz: no fuzz build in $build (configure with CC=clang -DMSM_FUZZ=ON, or run make fuzz)" >&2
    exit 2
fi

# The targets are the sources: a target that failed to build is an error, not a skip.
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
    for src in "$root"/tests/fuzz/fuzz_*.c; do
        [ -e "$src" ] || continue
        n="$(basename "$src" .c)"
        names+=("${n#fuzz_}")
    done
fi
if [ ${#names[@]} -eq 0 ]; then
    echo "fuzz: no targets in tests/fuzz/" >&2
    exit 2
fi

# A sanitizer report must end the run with a stack, and leaks count as failures.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

# Prints one stat (stat::<key>: value) from a libFuzzer log, or "-".
fuzz_stat() {
    local v
    v="$(sed -n "s/^stat::$1: *//p" "$2" | tail -n 1)"
    echo "${v:--}"
}

# Names what ended a failed run, from the log.
verdict() {
    local log="$1" rc="$2"
    if grep -q "ERROR: libFuzzer: timeout" "$log"; then
        echo "TIMEOUT"
    elif grep -q "ERROR: libFuzzer: out-of-memory" "$log"; then
        echo "OOM"
    elif grep -q "ERROR: LeakSanitizer" "$log"; then
        echo "LEAK"
    elif grep -qE "ERROR: (AddressSanitizer|UndefinedBehaviorSanitizer|libFuzzer: deadly signal)|runtime error:" "$log"; then
        echo "CRASH"
    else
        echo "FAILED (exit $rc)"
    fi
}

mkdir -p "$build/corpus" "$build/artifacts" "$build/logs"
rows=()
failed=0
for name in "${names[@]}"; do
    exe="$bin_dir/fuzz_$name"
    corpus="$build/corpus/$name"
    artifacts="$build/artifacts/$name"
    log="$build/logs/$name.log"
    if [ ! -x "$exe" ]; then
        rows+=("$name|-|-|NOT BUILT")
        failed=1
        continue
    fi
    rm -rf "$corpus"
    mkdir -p "$corpus" "$artifacts"
    if [ -d "$root/tests/fuzz/corpus/$name" ]; then
        cp -R "$root/tests/fuzz/corpus/$name/." "$corpus/"
    fi
    args=(-max_total_time="$seconds" -timeout="$timeout_s" -rss_limit_mb="$rss_mb"
        -print_final_stats=1 -artifact_prefix="$artifacts/")
    if [ -f "$root/tests/fuzz/dict/$name.dict" ]; then
        args+=(-dict="$root/tests/fuzz/dict/$name.dict")
    fi
    echo "fuzz: $name for ${seconds}s (log: $log)" >&2
    start=$(date +%s)
    "$exe" "${args[@]}" "${extra[@]}" "$corpus" >"$log" 2>&1
    rc=$?
    elapsed=$(($(date +%s) - start))
    execs="$(fuzz_stat number_of_executed_units "$log")"
    if [ $rc -eq 0 ]; then
        result="ok ($(find "$corpus" -type f | wc -l) inputs in corpus)"
    else
        result="$(verdict "$log" $rc)"
        failed=1
        found="$(sed -n 's/.*Test unit written to //p' "$log" | tail -n 1)"
        [ -n "$found" ] && result="$result: $found"
        echo "fuzz: $name failed; reproduce with: $exe ${found:-<input>}" >&2
        # The report's gist: what happened and the frames in source files (full log above).
        grep -m 16 -E "ERROR|SUMMARY|runtime error|^fuzz_[a-z0-9_]*: |#[0-9]+ 0x[0-9a-f]+ in [^ ]+ /" \
            "$log" >&2
    fi
    rows+=("$name|$execs|$elapsed|$result")
done

printf '\n| %-20s | %12s | %7s | %s\n' "target" "executions" "seconds" "result"
printf '|%s|%s|%s|%s\n' "----------------------" "--------------" "---------" "--------"
for row in "${rows[@]}"; do
    IFS='|' read -r name execs elapsed result <<<"$row"
    printf '| %-20s | %12s | %7s | %s\n' "$name" "$execs" "$elapsed" "$result"
done
exit $failed
