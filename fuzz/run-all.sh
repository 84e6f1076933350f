#!/usr/bin/env bash
# Builds and runs every fuzz target (or those named as arguments) one after
# another; prints per target the executions, exec/s, coverage, new corpus
# units and the result, and appends the same, with the commit, to a record
# (fuzz/runs.tsv) that the README's "Last full run" quotes.
#
#   fuzz/run-all.sh                                 # all targets, 600 s each
#   FUZZ_SECS=60 fuzz/run-all.sh sns normalizer     # two targets, one minute each
#
# The targets are built the way `cargo fuzz build --debug-assertions` builds
# them (libFuzzer with AddressSanitizer and SanitizerCoverage, `--cfg fuzzing`,
# debug assertions on: an overflow is a finding), with plain cargo, so
# cargo-fuzz need not be installed (CI runs this script); RUSTC_BOOTSTRAP=1
# lets the stable toolchain take the nightly-only `-Zsanitizer` flag.
#
# Nothing under fuzz/corpus changes: libFuzzer writes what it finds to the
# first corpus directory, here a scratch copy ($FUZZ_SCRATCH/<target>), and
# reads the seeds from corpus/<target>. A crash is written to
# $FUZZ_ARTIFACTS/<target>/; the script then prints the command that
# reproduces it and exits 1 after the last target.
#
# Settings (environment): FUZZ_SECS (600), FUZZ_MAX_LEN (16384), FUZZ_SCRATCH
# (/tmp/fuzzcorpus), FUZZ_LOGS (/tmp/fuzzlogs), FUZZ_ARTIFACTS (fuzz/artifacts),
# FUZZ_TARGET_DIR (fuzz/target), FUZZ_RECORD (fuzz/runs.tsv; CI points it
# elsewhere so a clean clone stays clean), FUZZ_NICE (10).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
FUZZ_SECS=${FUZZ_SECS:-600}
FUZZ_SCRATCH=${FUZZ_SCRATCH:-/tmp/fuzzcorpus}
FUZZ_LOGS=${FUZZ_LOGS:-/tmp/fuzzlogs}
FUZZ_ARTIFACTS=${FUZZ_ARTIFACTS:-$here/artifacts}
FUZZ_RECORD=${FUZZ_RECORD:-$here/runs.tsv}
FUZZ_NICE=${FUZZ_NICE:-10}
# Input size cap: the normalizers' own body limit is 1 MiB, but big inputs
# slow the fuzzer down without reaching new code.
FUZZ_MAX_LEN=${FUZZ_MAX_LEN:-16384}
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$here/target}
export RUSTC_BOOTSTRAP=1 CARGO_INCREMENTAL=0
host=$(rustc -vV | sed -n 's/^host: //p')
# cargo-fuzz's flags (`cargo fuzz build --debug-assertions`, address sanitizer).
# With `--target`, they apply to the targets and their dependencies but not to
# build scripts and proc macros.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares \
 -Zsanitizer=address -Cdebug-assertions -Cforce-frame-pointers"

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' Cargo.toml | grep -v '^triage-gate-fuzz$')
fi
mkdir -p "$FUZZ_SCRATCH" "$FUZZ_LOGS"
commit=$(git -C "$here" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$here/.." status --porcelain --untracked-files=no -- crates/normalize crates/model fuzz/src fuzz/fuzz_targets fuzz/Cargo.toml fuzz/Cargo.lock 2>/dev/null)" ]; then
    commit="$commit+dirty"
fi

echo "building ${targets[*]} (commit $commit)"
build_start=$(date +%s)
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
nice -n "$FUZZ_NICE" cargo build --locked --release --target "$host" "${bins[@]}" >"$FUZZ_LOGS/build.log" 2>&1 \
    || { tail -40 "$FUZZ_LOGS/build.log"; echo "fuzz build failed, see $FUZZ_LOGS/build.log"; exit 1; }
echo "built in $(( $(date +%s) - build_start ))s"
bindir="$CARGO_TARGET_DIR/$host/release"

[ -s "$FUZZ_RECORD" ] || printf 'date\tcommit\ttarget\tsecs\texecutions\texec_per_sec\tcov\tft\tresult\n' >"$FUZZ_RECORD"
summary="$FUZZ_LOGS/summary.txt"
printf '%-18s %6s %12s %8s %7s %7s %6s %s\n' target secs executions exec/s cov ft units result >"$summary"
failed=()
for t in "${targets[@]}"; do
    scratch="$FUZZ_SCRATCH/$t"
    artifacts="$FUZZ_ARTIFACTS/$t"
    mkdir -p "$scratch" "$artifacts"
    stamp="$FUZZ_LOGS/$t.start"
    touch "$stamp"
    log="$FUZZ_LOGS/$t.log"
    echo "$(date -u +%H:%M:%S) fuzzing $t for ${FUZZ_SECS}s (log: $log)"
    start=$(date +%s)
    status=0
    nice -n "$FUZZ_NICE" "$bindir/$t" "$scratch" "corpus/$t" \
        -max_total_time="$FUZZ_SECS" -max_len="$FUZZ_MAX_LEN" -print_final_stats=1 \
        -artifact_prefix="$artifacts/" >"$log" 2>&1 || status=$?
    secs=$(( $(date +%s) - start ))
    execs=$(grep -o 'stat::number_of_executed_units:[[:space:]]*[0-9]*' "$log" | awk '{print $2}' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec:[[:space:]]*[0-9]*' "$log" | awk '{print $2}' | tail -1)
    units=$(grep -o 'stat::new_units_added:[[:space:]]*[0-9]*' "$log" | awk '{print $2}' | tail -1)
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")
    found=$(find "$artifacts" -type f -newer "$stamp" | head -1)
    result=ok
    if [ "$status" -ne 0 ]; then
        if [ -n "$found" ]; then
            result="crash:$(basename "$found")"
        else
            result="exit=$status"
        fi
        failed+=("$t")
    fi
    printf '%-18s %6s %12s %8s %7s %7s %6s %s\n' "$t" "$secs" "${execs:-?}" "${rate:-?}" \
        "${cov:-?}" "${ft:-?}" "${units:-?}" "$result" | tee -a "$summary"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$commit" "$t" \
        "$secs" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$result" >>"$FUZZ_RECORD"
    grep -E '^Done [0-9]+ runs' "$log" | tail -1 || true
    if [ "$result" != ok ]; then
        echo "---- $t failed; the end of $log:"
        tail -30 "$log"
        if [ "${result#crash:}" != "$result" ]; then
            echo "---- reproduce (runs the input once through the target):"
            echo "  $bindir/$t $found"
            echo "  or: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $t $found"
            if [ "$(stat -c %s "$found")" -le 4096 ]; then
                echo "  the input, base64 (echo ... | base64 -d > crash):"
                echo "  $(base64 -w0 "$found")"
            fi
        fi
    fi
done
echo
cat "$summary"
echo "record: $FUZZ_RECORD"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found a problem in: ${failed[*]}" >&2
    exit 1
fi
