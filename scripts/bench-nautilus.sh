#!/usr/bin/env bash
# trellis's backtester against NautilusTrader's on the same 1,000,000-tick EURUSD file, side by side in one run.
#
# Both run an EMA cross of 10/20 on one-minute bars built from bids, trading one lot (100,000 EUR):
#   trellis:  target/release/trellis backtest --strategy ema_cross ... --json, timed as a whole process
#             (start-up, CSV reading and parsing, the backtest, the report);
#   Nautilus: bench/nautilus_ema_cross.py, the example EMACross strategy in a BacktestEngine; it reports
#             engine.run() alone (run_s) and, apart, the CSV loading and QuoteTick building (load_s).
# The ratio printed is Nautilus's engine.run() median over trellis's whole-process median, so it leaves out
# everything Nautilus spends before the run and counts everything trellis spends.
#
# Usage: scripts/bench-nautilus.sh
# Environment:
#   N=3            runs of each, alternating trellis and Nautilus
#   BUILD=1        cargo build --release --locked first even when target/release/trellis exists
#                  (it is built anyway when missing)
#   ONLY=nautilus  skip trellis altogether (no build, no runs): the Nautilus half alone
#   TICKS=1000000  ticks in the generated file (another count gets a file of its own)
#   TRELLIS=path   the trellis binary to time (default target/release/trellis, the one built here)
#
# Everything it makes is under target/, which cargo clean removes:
#   target/bench-venv/              a throwaway venv with nautilus_trader, for this benchmark only (never for tests)
#   target/bench-data/eurusd-1m.csv the tick file, generated once (seeded, so the same on every machine)
set -euo pipefail
cd "$(dirname "$0")/.."

N="${N:-3}"
BUILD="${BUILD:-0}"
ONLY="${ONLY:-}"
TICKS="${TICKS:-1000000}"
# The version this benchmark was written and checked against (CPython 3.11, x86_64).
NAUTILUS_VERSION="1.221.0"

VENV=target/bench-venv
PY="$VENV/bin/python"
DATA_DIR=target/bench-data
if [[ "$TICKS" == 1000000 ]]; then
    DATA="$DATA_DIR/eurusd-1m.csv"
else
    DATA="$DATA_DIR/eurusd-$TICKS.csv"
fi
TRELLIS="${TRELLIS:-target/release/trellis}"

# --- The venv: created when missing; nautilus_trader (re)installed unless the pinned version is there. ---
if [[ ! -x "$PY" ]]; then
    echo "creating $VENV" >&2
    python3 -m venv "$VENV"
fi
if ! "$PY" -c "import sys, nautilus_trader as n; sys.exit(n.__version__ != '$NAUTILUS_VERSION')" 2>/dev/null; then
    echo "installing nautilus_trader==$NAUTILUS_VERSION into $VENV" >&2
    "$PY" -m pip install --quiet --disable-pip-version-check "nautilus_trader==$NAUTILUS_VERSION"
fi

# --- The tick file: a seeded random walk, generated once. ---
# EURUSD from 1.10000 (2024-01-01 00:00:00 UTC), the bid moving by whole points (-2..+2, most often 0 or ±1),
# ticks 1 + Exp(mean 249.5) ms apart (about 250 ms on average), the ask 1-3 points above the bid.
# Written to a temporary name and renamed, so an interrupted run leaves no half file behind.
if [[ ! -s "$DATA" ]]; then
    mkdir -p "$DATA_DIR"
    echo "generating $DATA ($TICKS ticks)" >&2
    python3 - "$DATA.tmp" "$TICKS" <<'EOF'
import random
import sys

path, count = sys.argv[1], int(sys.argv[2])
rng = random.Random(20240101)
steps = (-2, -1, -1, 0, 0, 0, 0, 1, 1, 2)
t = 1_704_067_200_000  # 2024-01-01T00:00:00Z, in ms
bid = 110_000          # in points of 0.00001
with open(path, "w", buffering=1 << 20) as f:
    f.write("time_msc,bid,ask\n")
    for _ in range(count):
        t += 1 + int(rng.expovariate(1 / 249.5))
        bid += rng.choice(steps)
        ask = bid + rng.randint(1, 3)
        f.write(f"{t},{bid // 100000}.{bid % 100000:05d},{ask // 100000}.{ask % 100000:05d}\n")
EOF
    mv "$DATA.tmp" "$DATA"
fi

# --- trellis's release binary: built when missing or asked for. ---
if [[ "$ONLY" != nautilus ]]; then
    if [[ "$BUILD" == 1 || ! -x "$TRELLIS" ]]; then
        echo "building $TRELLIS" >&2
        cargo build --release --locked
    fi
fi

# --- The runs, alternating, each result a JSON line in $RESULTS. ---
RESULTS="$(mktemp)"
trap 'rm -f "$RESULTS"' EXIT

run_trellis() {
    local start end out
    start="$(date +%s.%N)"
    out="$("$TRELLIS" backtest --input "$DATA" --symbol EURUSD --strategy ema_cross \
        --param fast=10 --param slow=20 --timeframe M1 --volume 1 --json)"
    end="$(date +%s.%N)"
    # The report is the last line of standard output; its wall-clock time is added to it.
    "$PY" -c 'import json, sys; r = json.loads(sys.argv[3].strip().splitlines()[-1]); r["tool"] = "trellis"; r["wall_s"] = float(sys.argv[2]) - float(sys.argv[1]); print(json.dumps(r))' \
        "$start" "$end" "$out" >>"$RESULTS"
}

run_nautilus() {
    local out
    out="$("$PY" bench/nautilus_ema_cross.py "$DATA")"
    "$PY" -c 'import json, sys; r = json.loads(sys.argv[1].strip().splitlines()[-1]); r["tool"] = "nautilus"; print(json.dumps(r))' \
        "$out" >>"$RESULTS"
}

for i in $(seq 1 "$N"); do
    if [[ "$ONLY" != nautilus ]]; then
        echo "run $i/$N: trellis" >&2
        run_trellis
    fi
    echo "run $i/$N: nautilus" >&2
    run_nautilus
done

# --- The table. ---
"$PY" - "$RESULTS" "$DATA" <<'EOF'
import json
import statistics
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
trellis = [r for r in rows if r["tool"] == "trellis"]
nautilus = [r for r in rows if r["tool"] == "nautilus"]

print(f"file: {sys.argv[2]}")
print(f"{'run':>4}  {'trellis whole process s':>24}  {'nautilus engine.run() s':>24}  {'nautilus load s':>16}")
for i in range(max(len(trellis), len(nautilus))):
    t = f"{trellis[i]['wall_s']:.3f}" if i < len(trellis) else "-"
    n = f"{nautilus[i]['run_s']:.3f}" if i < len(nautilus) else "-"
    l = f"{nautilus[i]['load_s']:.3f}" if i < len(nautilus) else "-"
    print(f"{i + 1:>4}  {t:>24}  {n:>24}  {l:>16}")
t_med = statistics.median(r["wall_s"] for r in trellis) if trellis else None
n_med = statistics.median(r["run_s"] for r in nautilus)
l_med = statistics.median(r["load_s"] for r in nautilus)
t_cell = f"{t_med:.3f}" if t_med is not None else "-"
print(f"{'med':>4}  {t_cell:>24}  {n_med:>24.3f}  {l_med:>16.3f}")
if t_med is not None:
    print(f"ratio (nautilus engine.run() median / trellis whole-process median): {n_med / t_med:.1f}x")
    last = trellis[-1]
    print(
        f"trellis:  {last['ticks']} ticks, {last['bars']} bars, {last['orders']} orders, {last['fills']} fills, "
        f"{last['trades']} trades; its own engine time {statistics.median(r['elapsed_ms'] for r in trellis):.1f} ms (median)"
    )
last = nautilus[-1]
print(
    f"nautilus: {last['ticks']} ticks, {last['bars']} bars, {last['orders']} orders, {last['fills']} fills, "
    f"{last['positions']} positions (nautilus_trader {last['version']})"
)
print(
    "(trellis reverses with one order of 2 lots and keeps its last position; Nautilus's EMACross closes and\n"
    " then opens, two orders per reversal, and closes at the end: so its orders ~ 2 x trellis's, its positions ~ trellis's orders)"
)
EOF
