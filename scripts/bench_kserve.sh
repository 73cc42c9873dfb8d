#!/usr/bin/env bash
# KServe front ends against the bare KServe echo (sidecar/bench/kserve_echo.py) and
# the native API, in one run, on one machine: docs/kserve.md "How fast".
#
#   PERF_ANALYZER=/path/to/perf_analyzer scripts/bench_kserve.sh
#
# perf_analyzer is Triton's C++ load generator (PyPI `perf-analyzer`, glibc >= 2.38);
# it runs in its own process, so the figures are the server's, not a Python client's.
# Server CPU per request is read from /proc; requests from the server's own counts.
set -u
cd "$(dirname "$0")/.."
PA=${PERF_ANALYZER:-perf_analyzer}
PY=${PYTHON:-.venv/bin/python}
URI='mock:?base_ms=2&per_item_ms=0.02&dim=256'
GRPC=127.0.0.1:17651 HTTP=18000

wait_ready() { for _ in $(seq 100); do curl -sf "localhost:$1/v2/health/ready" >/dev/null && return; sleep 0.1; done; echo "not ready" >&2; exit 1; }
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }   # user + system, 100 per second
measure() {  # pid, count command, name, perf_analyzer args...
  local pid=$1 count=$2 name=$3; shift 3
  local c0 n0 out c1 n1
  c0=$(ticks "$pid"); n0=$($count)
  out=$("$PA" -m model "$@" --measurement-interval 4000 --max-trials 10 -s 25 2>&1)
  c1=$(ticks "$pid"); n1=$($count)
  printf '%-22s %9s infer/s  p50 %6s us  p99 %6s us  server CPU %6s us/item\n' "$name" \
    "$(echo "$out" | grep -m1 'Throughput:' | awk '{print $2}')" \
    "$(echo "$out" | grep -m1 'p50 latency' | awk '{print $3}')" \
    "$(echo "$out" | grep -m1 'p99 latency' | awk '{print $3}')" \
    "$(awk -v c=$((c1 - c0)) -v n=$((n1 - n0)) 'BEGIN { printf "%.1f", n ? c * 10000 / n : 0 }')"
  echo "$out" | grep -i 'failed\|error' | head -2
}
cases() {  # pid, count command, grpc target, http port, label
  measure "$1" "$2" "$5 grpc unary" -i grpc -u "$3" --concurrency-range 64 -b 1
  measure "$1" "$2" "$5 grpc stream" -i grpc -u "$3" --streaming --concurrency-range 64 -b 1
  measure "$1" "$2" "$5 http binary" -i http -u "127.0.0.1:$4" --concurrency-range 64 -b 1
  measure "$1" "$2" "$5 grpc unary b8" -i grpc -u "$3" --concurrency-range 8 -b 8
}
echo_count() { curl -s localhost:18010/count | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["answered"])'; }
sidecar_count() { curl -s "localhost:$HTTP/v2/models/model/stats" | "$PY" -c 'import json, sys; print(json.load(sys.stdin)["model_stats"][0]["inference_count"])'; }

echo "$(nproc) cores, $("$PY" -V), commit $(git rev-parse --short HEAD), $("$PA" --version 2>&1 | head -1), model $URI, 64 in flight"
"$PY" -m sidecar.bench.kserve_echo 127.0.0.1:17661 18010 256 >/dev/null 2>&1 &
ECHO=$!
trap 'kill $ECHO $SIDECAR 2>/dev/null' EXIT
SIDECAR=
wait_ready 18010
cases $ECHO echo_count 127.0.0.1:17661 18010 "echo"
kill $ECHO; wait $ECHO 2>/dev/null

"$PY" -m sidecar.cli serve --rpc-endpoint $GRPC --kserve-http-port $HTTP --health-port 0 --metrics-reporters '' \
  --model-uri "$URI" --log-level WARNING >/dev/null 2>&1 &
SIDECAR=$!
wait_ready $HTTP
cases $SIDECAR sidecar_count $GRPC $HTTP "sidecar"
echo "native API, same sidecar (gpu-sidecar bench, one load process):"
"$PY" -m sidecar.bench --target $GRPC --server-pid $SIDECAR --in-flight 64 --seconds 8 --no-baselines 2>&1 | grep -m1 "in-flight=64"
"$PY" -m sidecar.bench --target $GRPC --server-pid $SIDECAR --in-flight 64 --seconds 8 --no-baselines --unpacked 2>&1 | grep -m1 "in-flight=64"
