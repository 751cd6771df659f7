#!/usr/bin/env bash
# Fuzzes porch's parsers and protocol code (see docs/fuzzing.md).
#
#   fuzz/run.sh [SECONDS]             coverage-guided (libFuzzer) run of every target,
#                                     SECONDS each (default 15); fails on a crash
#   fuzz/run.sh --random [SECONDS]    the same targets as a plain random-input run, no
#                                     instrumentation (default 10 s each; the test suite's step)
#   fuzz/run.sh --replay NAME FILE... runs target NAME on saved inputs (e.g. a crash file)
#
# FUZZ_TARGETS="strict_split ipc_stream" limits the run to some targets. Extra libFuzzer
# flags can be given in FUZZ_FLAGS (e.g. "-max_len=8192"). One fuzzing job at a time.
# Builds need only stable Rust: the instrumentation flags are the ones `cargo fuzz build
# -s none` passes (without LTO, which the coverage instrumentation defeats anyway).
set -euo pipefail
cd "$(dirname "$0")"
FUZZ_DIR=$PWD
ALL_TARGETS="config_toml ipc_stream ipc_roundtrip route_path static_path strict_split"
TARGETS=${FUZZ_TARGETS:-$ALL_TARGETS}
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$FUZZ_DIR/target}
# Scratch files of the targets (a static-file tree, a config file) go here.
export TMPDIR=$CARGO_TARGET_DIR/fuzz-tmp

libfuzzer_build() {
    # The flags of `cargo fuzz build -s none` (debug assertions and overflow checks on).
    local flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
    flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
    flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
    flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
    flags+=" -Cllvm-args=-simplifycfg-branch-fold-threshold=0"
    flags+=" -Cllvm-args=-sanitizer-coverage-stack-depth -Cdebug-assertions -Ccodegen-units=1"
    local bins=()
    for t in $TARGETS; do bins+=(--bin "$t"); done
    RUSTFLAGS="$flags ${RUSTFLAGS:-}" cargo build --manifest-path "$FUZZ_DIR/Cargo.toml" \
        --target "$TRIPLE" --release --config 'profile.release.debug="line-tables-only"' \
        --config profile.release.lto=false \
        "${bins[@]}"
}

bin_of() { echo "$CARGO_TARGET_DIR/$TRIPLE/release/$1"; }

mkdir -p "$TMPDIR"
trap 'rm -rf "$TMPDIR"' EXIT

case "${1:-}" in
--random)
    shift
    secs=${1:-10}
    # shellcheck disable=SC2086
    cargo test --manifest-path "$FUZZ_DIR/Cargo.toml" --release --no-default-features \
        --test random -- "$secs" $TARGETS
    exit
    ;;
--replay)
    shift
    name=${1:?usage: fuzz/run.sh --replay NAME FILE...}
    shift
    TARGETS=$name
    libfuzzer_build
    # Given files, a libFuzzer binary runs each once and stops at the first failure.
    "$(bin_of "$name")" "$@"
    exit
    ;;
esac

secs=${1:-15}
libfuzzer_build
failed=()
for t in $TARGETS; do
    corpus=$FUZZ_DIR/corpus/$t
    artifacts=$FUZZ_DIR/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    dirs=("$corpus" "$FUZZ_DIR/seeds/$t")
    [ -d "$FUZZ_DIR/regressions/$t" ] && dirs+=("$FUZZ_DIR/regressions/$t")
    dict=()
    [ -f "$FUZZ_DIR/dict/$t.dict" ] && dict=("-dict=$FUZZ_DIR/dict/$t.dict")
    echo "== fuzz $t for ${secs}s"
    # shellcheck disable=SC2086
    if "$(bin_of "$t")" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -max_len=4096 -print_final_stats=1 -artifact_prefix="$artifacts/" \
        "${dict[@]}" ${FUZZ_FLAGS:-} "${dirs[@]}" 2>"$CARGO_TARGET_DIR/$t.log"; then
        grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ *DONE)' \
            "$CARGO_TARGET_DIR/$t.log" || true
    else
        tail -40 "$CARGO_TARGET_DIR/$t.log"
        echo "!! $t failed; the input is in $artifacts/ (log: $CARGO_TARGET_DIR/$t.log)"
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzzing found failures in: ${failed[*]}"
    exit 1
fi
echo "fuzzing: every target ran ${secs}s without a failure"
