#!/usr/bin/env bash
# Ours vs FlexAttention at the Wan2.1-1.3B shape with the same timer (one device call, ~4 min):
# `sparsetune bench attention` (CUPTI kernel time) and scripts/flex_attention_bench.py --timer
# kineto (torch.profiler kernel time, also from CUPTI), alternated twice so run-to-run clock drift
# shows; plus two `profile` runs of the Wan shape config (repeat spread). Builds only `sparsetune`.
#   OUT=/some/dir scripts/gpu-flex-compare.sh      (carry .deps: the static SQLite)
cd "$(dirname "$0")/.." || exit 1
OUT="${OUT:-./out}"; mkdir -p "$OUT"
set -u
source scripts/gpu-cmake-args.sh
cmake -S . -B build-gpu "${GPU_CMAKE_ARGS[@]}" > $OUT/build.log 2>&1
cmake --build build-gpu -j16 --target sparsetune >> $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
B=build-gpu/bin/sparsetune
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv
for i in 1 2; do timeout 60 $B profile configs/wan2.1-1.3b-shape.json 2>&1 | grep -m1 latency; done
timeout 90 $B bench attention --device cuda --shape wan2.1-1.3b-480p --sparsity 0,0.8,0.9 --repeats 7 --json > $OUT/bench-wan.json 2>$OUT/bench.err
python3 - $OUT/bench-wan.json <<'PY'
import json,sys
j=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(j["card"], j["timing"], j["date"])
for r in j["rows"]: print("  %-20s %6.3f %9.3f ms %7.1f TFLOP/s %6.2fx"%(r["path"],r["sparsity"],r["time_ms"],r["tflops"],r["speedup"]))
PY
timeout 150 python3 scripts/flex_attention_bench.py --shape wan2.1-1.3b-480p --sparsity 0,0.8,0.9 --timer kineto > $OUT/flex-kineto.json 2>$OUT/flex-kineto.err; tail -5 $OUT/flex-kineto.err
timeout 90 $B bench attention --device cuda --shape wan2.1-1.3b-480p --sparsity 0,0.8,0.9 --repeats 7 --json > $OUT/bench-wan2.json 2>>$OUT/bench.err
python3 - $OUT/bench-wan2.json <<'PY'
import json,sys
j=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
print(j["timing"], j["date"])
for r in j["rows"]: print("  %-20s %6.3f %9.3f ms %7.1f TFLOP/s %6.2fx"%(r["path"],r["sparsity"],r["time_ms"],r["tflops"],r["speedup"]))
PY
timeout 100 python3 scripts/flex_attention_bench.py --shape wan2.1-1.3b-480p --sparsity 0,0.8,0.9 --timer kineto > $OUT/flex-kineto2.json 2>$OUT/flex-kineto2.err; tail -5 $OUT/flex-kineto2.err
