#!/usr/bin/env bash
# Run every fuzz target for a bounded time: fuzz/run-all.sh SECONDS
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# Exits non-zero if any target finds a crash, a hang or an allocation over
# the limit; the reproducer is left in fuzz/artifacts/<target>/.
set -euo pipefail
secs="${1:?usage: fuzz/run-all.sh SECONDS}"
cd "$(dirname "$0")"
targets=(reassembly http1 http2 hpack postgres redis dns fix mysql amqp nats mqtt)
cargo +nightly fuzz build "${targets[@]/#/}" >/dev/null 2>&1 || cargo +nightly fuzz build
failed=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "seeds/$t"
    log="$(mktemp)"
    # -timeout: a single input running > 10 s is a hang.
    # -malloc_limit_mb / -rss_limit_mb: unbounded allocation is a failure.
    if cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -timeout=10 -malloc_limit_mb=512 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1; then
        runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
        cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 || true)"
        echo "PASS $t: $runs runs in ${secs}s, $cov"
    else
        echo "FAIL $t"
        tail -40 "$log"
        failed+=("$t")
    fi
    rm -f "$log"
done
if ((${#failed[@]})); then
    echo "${#failed[@]} failed: ${failed[*]}"
    exit 1
fi
echo "all ${#targets[@]} fuzz targets passed"
