#!/usr/bin/env bash
# Long-run soak of the deployed engine (docs/RELIABILITY.md): `edgempir bench --duration`
# for at least 10 minutes on the x86 bundle, then the two figures that show a leak or a
# slow-down over time:
#   RSS growth     resident memory of the bench process, last window minus first, and the
#                  least-squares slope over all windows (MiB per minute)
#   latency drift  p50 latency of the last window against the first (%)
# bench itself flags growth above 8 MiB and drift beyond +-10 % (targets/device/bench.py); this
# script prints the figures and exits 1 when either flag is raised.
#
# Usage: scripts/soak.sh [BUNDLE] [SECONDS]
#   BUNDLE   default bundles/fashion-mnist-x86 (what scripts/main-job.sh exports)
#   SECONDS  default 600; less is allowed for a try-out but is not the documented soak
# Environment: SOAK_OUT=path.json keeps the full bench report (default: a temporary file).
# Takes SECONDS plus about a minute (verification, latency, accuracy); one core is enough,
# so run it on a quiet machine: other load shows up as latency drift.
set -euo pipefail
cd "$(dirname "$0")/.."

bundle="${1:-bundles/fashion-mnist-x86}"
seconds="${2:-600}"
if [ ! -d "$bundle" ]; then
    echo "soak: no bundle at $bundle; make one with scripts/main-job.sh or" \
         "'edgempir export RUN --target x86 --out $bundle'" >&2
    exit 2
fi
if awk "BEGIN { exit !($seconds < 600) }"; then
    echo "soak: $seconds s is shorter than the documented 10-minute soak (a try-out)" >&2
fi
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then
    # shellcheck disable=SC1091
    . .venv/bin/activate
fi

out="${SOAK_OUT:-$(mktemp -d)/soak-$(basename "$bundle").json}"
echo "soak: edgempir bench $bundle --duration $seconds (report: $out)" >&2
# batch 1 (the soak uses the first batch size); no Square attack and no peak-RSS children:
# the soak measures its own process, window by window
edgempir bench "$bundle" --duration "$seconds" --batch-sizes 1 --repeats 50 \
    --square-n 0 --no-memory --json --out "$out" > /dev/null

python - "$out" "$bundle" <<'EOF'
import json
import sys

from edgempir.targets.device.bench import SOAK_LATENCY_DRIFT_FLAG, SOAK_RSS_GROWTH_FLAG

report, bundle = json.load(open(sys.argv[1])), sys.argv[2]
s = report["soak"]
w = s["windows"]
mib = 1 / 2**20
first, last = w[0], w[-1]
calls = sum(x["calls"] for x in w)
print(f"soak: {s['duration_s']:.1f} s on {bundle} ({report['bundle']['target']}, "
      f"{report['runtime']['name']}), batch {s['batch_size']}, {len(w)} windows of "
      f"{s['window_s']:.0f} s, {calls:,} calls")
slope = s["rss_growth_bytes_per_min"]
print(f"RSS growth: {first['rss_bytes'] * mib:.1f} MiB -> {last['rss_bytes'] * mib:.1f} MiB, "
      f"{s['rss_growth_bytes'] * mib:+.2f} MiB"
      + (f" ({slope * mib:+.3f} MiB/min fitted)" if slope is not None else "")
      + f"; flag above {SOAK_RSS_GROWTH_FLAG * mib:.0f} MiB: "
      + ("YES" if s["rss_growth_flag"] else "no"))
drift = s["latency_drift"]
print(f"latency drift: p50 {first['p50_ms']:.3f} ms -> {last['p50_ms']:.3f} ms, "
      + (f"{100 * drift:+.1f} %" if drift is not None else "n/a")
      + f" (p99 {first['p99_ms']:.3f} -> {last['p99_ms']:.3f} ms); flag beyond "
      f"+-{100 * SOAK_LATENCY_DRIFT_FLAG:.0f} %: " + ("YES" if s["latency_drift_flag"] else "no"))
print(f"{'t_s':>8} {'calls':>9} {'p50_ms':>8} {'p99_ms':>8} {'max_ms':>8} {'rss_MiB':>8}")
for x in w:
    print(f"{x['t_s']:8.1f} {x['calls']:9d} {x['p50_ms']:8.3f} {x['p99_ms']:8.3f} "
          f"{x['max_ms']:8.3f} {x['rss_bytes'] * mib:8.1f}")
sys.exit(1 if s["rss_growth_flag"] or s["latency_drift_flag"] else 0)
EOF
