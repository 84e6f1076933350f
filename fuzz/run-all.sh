#!/usr/bin/env bash
# Runs every fuzz target (or those named as arguments) one after another and
# prints per target: executions, exec/s, coverage, new corpus units, crashes.
#
#   fuzz/run-all.sh                      # all targets, 600 s each
#   FUZZ_SECS=60 fuzz/run-all.sh sns     # one target, one minute
#
# Scratch corpora go to $FUZZ_SCRATCH/<target> (seeded from corpus/<target>,
# so corpus/ keeps only the seeds); logs to $FUZZ_LOGS/<target>.log; crashes
# to artifacts/<target>/ (cargo-fuzz's default). Runs under `nice` so a shared
# machine stays usable. Needs cargo-fuzz; RUSTC_BOOTSTRAP=1 lets stable build
# with the nightly-only sanitizer flags.
set -euo pipefail

cd "$(dirname "$0")"
FUZZ_SECS=${FUZZ_SECS:-600}
FUZZ_SCRATCH=${FUZZ_SCRATCH:-/tmp/fuzzcorpus}
FUZZ_LOGS=${FUZZ_LOGS:-/tmp/fuzzlogs}
# Input size cap: the normalizers' own body limit is 1 MiB, but big inputs
# slow the fuzzer down without reaching new code.
FUZZ_MAX_LEN=${FUZZ_MAX_LEN:-16384}
export RUSTC_BOOTSTRAP=1 CARGO_INCREMENTAL=0

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi
mkdir -p "$FUZZ_SCRATCH" "$FUZZ_LOGS"

# Debug assertions on: integer overflow is a panic, and a finding.
echo "building ${targets[*]}"
: >"$FUZZ_LOGS/build.log"
for t in "${targets[@]}"; do
    nice -n 10 cargo fuzz build --debug-assertions "$t" >>"$FUZZ_LOGS/build.log" 2>&1 \
        || { echo "build of $t failed, see $FUZZ_LOGS/build.log"; exit 1; }
done

summary="$FUZZ_LOGS/summary.txt"
printf '%-18s %8s %12s %9s %8s %8s %8s %s\n' target secs executions exec/s cov ft units crashes >"$summary"
for t in "${targets[@]}"; do
    scratch="$FUZZ_SCRATCH/$t"
    mkdir -p "$scratch" "artifacts/$t"
    before=$(find "artifacts/$t" -type f | wc -l)
    log="$FUZZ_LOGS/$t.log"
    echo "$(date -u +%H:%M:%S) fuzzing $t for ${FUZZ_SECS}s (log: $log)"
    start=$(date +%s)
    status=0
    nice -n 10 cargo fuzz run --debug-assertions "$t" "$scratch" "corpus/$t" -- \
        -max_total_time="$FUZZ_SECS" -max_len="$FUZZ_MAX_LEN" -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    secs=$(( $(date +%s) - start ))
    execs=$(grep -o 'stat::number_of_executed_units:[[:space:]]*[0-9]*' "$log" | awk '{print $2}' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec:[[:space:]]*[0-9]*' "$log" | awk '{print $2}' | tail -1)
    units=$(grep -o 'stat::new_units_added:[[:space:]]*[0-9]*' "$log" | awk '{print $2}' | tail -1)
    last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")
    after=$(find "artifacts/$t" -type f | wc -l)
    crashes=$(( after - before ))
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        crashes="exit=$status"
    fi
    printf '%-18s %8s %12s %9s %8s %8s %8s %s\n' "$t" "$secs" "${execs:-?}" "${rate:-?}" \
        "${cov:-?}" "${ft:-?}" "${units:-?}" "$crashes" | tee -a "$summary"
done
echo
cat "$summary"
