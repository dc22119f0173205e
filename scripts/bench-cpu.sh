#!/usr/bin/env bash
# CPU attention benchmark of the sparse-attention runtime: `sparsetune bench attention` at the
# default shape and at the bundled tiny model's shape, on 1 and 2 threads, several runs each, and
# the default shape again with the sparse kernels' matmuls on sgemm instead of brgemm (A/B, runs
# interleaved). Writes benchmarks/cpu-attention.json (every run, raw) and
# benchmarks/cpu-attention.md (medians); hand-written notes below the line
# "<!-- notes: kept by bench-cpu.sh -->" of an existing .md are carried over.
#   scripts/bench-cpu.sh [BUILD_DIR] [RUNS]      (defaults: build, 3)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-build}
runs=${2:-3}
bin="$root/$build/bin/sparsetune"
[[ -x "$bin" ]] || { echo "bench-cpu: $bin not found (build the sparsetune target first)" >&2; exit 2; }
out_json="$root/benchmarks/cpu-attention.json"
out_md="$root/benchmarks/cpu-attention.md"
mkdir -p "$root/benchmarks"

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
cores=$(nproc)
commit=$(git -C "$root" rev-parse --short HEAD)
dirty=$(git -C "$root" status --porcelain -- kernels cli/bench.cpp | wc -l)
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)

declare -A shapes=(
  [default]="--repeats 3"
  [default_sgemm]="--repeats 3 --cpu-matmul sgemm"
  [tiny]="--grid 8,8,8 --heads 4 --head-dim 32 --block 32 --text 4 --repeats 21"
)
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for ((r = 0; r < runs; ++r)); do
  for threads in 1 2; do
    # Pin to as many cores as threads, like the default job's device.threads.
    cpus=$(seq -s, 0 $((threads - 1)))
    for shape in default default_sgemm tiny; do
      echo "bench-cpu: run $((r + 1))/$runs, $threads thread(s), $shape" >&2
      line=$(taskset -c "$cpus" "$bin" bench attention --device cpu --threads "$threads" \
               ${shapes[$shape]} --json)
      printf '{"shape":"%s","threads":%d,"run":%d,"result":%s}\n' "$shape" "$threads" "$r" \
        "$line" >>"$tmp"
    done
  done
done

python3 - "$tmp" "$out_json" "$out_md" "$cpu" "$cores" "$commit" "$dirty" "$date" "$runs" <<'PY'
import json, statistics, sys
tmp, out_json, out_md, cpu, cores, commit, dirty, date, runs = sys.argv[1:]
recs = [json.loads(l) for l in open(tmp)]
meta = {"cpu": cpu, "cores": int(cores), "commit": commit, "uncommitted_kernel_changes": int(dirty) > 0,
        "date": date, "runs": int(runs)}
json.dump({"meta": meta, "runs": recs}, open(out_json, "w"), indent=1)
lines = ["# CPU attention benchmark", "",
         f"Produced by `scripts/bench-cpu.sh` on {date}: CPU `{cpu}` ({cores} cores visible), "
         f"commit `{commit}`{' + uncommitted kernel changes' if int(dirty) else ''}. "
         f"Each cell is the median over {runs} runs of `sparsetune bench attention --json` "
         "(each run itself reports the median of its repeats). The machine is shared: "
         "expect noise of 10-30 % between runs.", ""]
titles = {"default": "default", "default_sgemm": "default, sparse-kernel matmuls on sgemm (A/B)",
          "tiny": "tiny"}
for shape in ["default", "default_sgemm", "tiny"]:
    sub = [r for r in recs if r["shape"] == shape]
    if not sub:
        continue
    s = sub[0]["result"]["shape"]
    mm = sub[0]["result"].get("cpu_matmul", "?")
    lines.append(f"## {titles[shape]}: grid {'x'.join(map(str, s['grid']))}, {s['heads']} heads x "
                 f"{s['head_dim']}, block {s['block']}, text {s['text_tokens']}, batch {s['batch']}, matmul {mm}")
    lines.append("")
    loads = sorted({r["result"].get("load_average", "?") for r in sub})
    lines.append("Load average (1/5/15 min) at the end of each run: " + "; ".join(loads) + ".")
    lines.append("")
    lines.append("| pattern | param | sink | density | ideal | ms (1 thr) | speedup (1) | eff (1) "
                 "| cached ms (1) | ms (2 thr) | speedup (2) | eff (2) | cached ms (2) |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    def key_of(row):
        return (row["pattern"], row["param"], row.get("sink", True))
    keys = [key_of(row) for row in sub[0]["result"]["rows"]]
    for key in keys:
        sink = "-" if key[0] != "block_sparse" else ("yes" if key[2] else "no")
        cells = [key[0], f"{key[1]:g}", sink]
        dens = None
        per = []
        for threads in (1, 2):
            ms, sp, cached = [], [], []
            for r in sub:
                if r["threads"] != threads:
                    continue
                for row in r["result"]["rows"]:
                    if key_of(row) == key:
                        ms.append(row["time_ms"]); sp.append(row["speedup"]); dens = row["density"]
                        cached.append(row.get("cached_ms", 0.0))
            eff = statistics.median(sp) * dens if sp else None
            per += [f"{statistics.median(ms):.2f}" if ms else "-",
                    f"{statistics.median(sp):.2f}x" if sp else "-",
                    f"{100 * eff:.0f}%" if eff is not None else "-",
                    f"{statistics.median(cached):.2f}" if cached and statistics.median(cached) > 0 else "-"]
        lines.append("| " + " | ".join(cells + [f"{dens:.3f}", f"{1 / dens:.2f}x"] + per) + " |")
    lines.append("")
lines.append("density: fraction of q.k pairs computed; ideal = 1/density, the speedup of a kernel as "
             "fast per computed pair as dense SDPA; eff = speedup / ideal. Each row is timed "
             "interleaved with dense SDPA calls. block_sparse `ms` rebuilds its mask and plan every "
             "call (mask_refresh 1); `cached ms` reuses them (the steps between refreshes). sink: "
             "first-frame rows and columns dense (RainFusion2.0's default).")
lines.append("")
marker = "<!-- notes: kept by bench-cpu.sh -->"
try:
    old = open(out_md).read()
except FileNotFoundError:
    old = ""
if marker in old:
    lines.append(old[old.index(marker):].rstrip("\n"))
    lines.append("")
open(out_md, "w").write("\n".join(lines))
PY
echo "bench-cpu: wrote $out_md and $out_json"
