#!/usr/bin/env python3
"""How candidate speedups scatter under different latency estimators, from the same raw repeats.

Runs `sparsetune bench evaluate CONFIG --json` (the dense seed every --dense-every-th candidate,
the same candidates in every run for a fixed --seed) and recomputes every speedup from the timed
repeats each result carries (`repeat_ms` of candidates and of the bracketing dense references):

  candidate estimators: min, median, mean, trimmed mean (drops the lowest and highest repeat;
                        equal to the median for 3 repeats)
  reference combiners:  "mean2": mean of the two bracketing references' estimates (the
                        evaluator's way), "pooled": the estimator over both references' repeats
                        (bracketed pairing only; with latency.pairing "interleaved" each
                        candidate has its own interleaved dense repeats and both rows agree)

Reports, per estimator: the dense seed's speedup (should be 1.00: its median, spread =
(max - min) / median, worst |s - 1|), the scatter of the dense references' estimates, and, when
several runs evaluated the same candidates, each candidate's speedup spread across runs.
The load average is read before and after every run (the machine is shared).

  scripts/timing-estimators.py run --sparsetune build/bin/sparsetune --config configs/default.json \\
      --runs 2 --candidates 24 --out /tmp/timing
  scripts/timing-estimators.py analyze /tmp/timing/run-*.json
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def trimmed_mean(xs):
    if len(xs) < 3:
        return statistics.fmean(xs)
    s = sorted(xs)[1:-1]
    return statistics.fmean(s)


ESTIMATORS = {
    "min": min,
    "median": statistics.median,
    "mean": statistics.fmean,
    "trimmed": trimmed_mean,
}


def spread(xs):
    m = statistics.median(xs)
    return (max(xs) - min(xs)) / m if m > 0 else float("nan")


def speedups(run, est, combine):
    """(candidate index, is_dense, speedup) of every timed candidate of one bench run."""
    f = ESTIMATORS[est]
    out = []
    for c in run["candidates"]:
        ref = c.get("dense_reference") or {}
        if not c["ok"] or not c.get("repeat_ms"):
            continue
        if ref.get("pairing") == "interleaved":
            # One dense measurement interleaved with the candidate's repeats: nothing to combine.
            dense = f(ref["repeat_ms"])
        elif "before_repeat_ms" in ref:
            a, b = ref["before_repeat_ms"], ref["after_repeat_ms"]
            dense = f(a + b) if combine == "pooled" else 0.5 * (f(a) + f(b))
        else:
            continue
        out.append((c["candidate"], c["dense"], dense / f(c["repeat_ms"])))
    return out


def analyze(paths):
    runs = []
    for p in paths:
        with open(p) as f:
            runs.append(json.load(f))
    for p, r in zip(paths, runs):
        load = r.get("loadavg_before", "?"), r.get("loadavg_after", "?")
        print(f"{os.path.basename(p)}: {r['date']}, {r['device']}, commit {r['commit']}, "
              f"repeats {r['latency_repeats']}, {len(r['candidates'])} candidates, "
              f"{len(r['dense_references'])} dense references, load before/after {load}")
    print()
    print("dense seed speedup (should be 1.00), all runs pooled; dense references' scatter")
    print(f"{'estimator':10} {'reference':8} {'n':>3} {'median':>7} {'spread':>7} "
          f"{'max|s-1|':>8} {'stdev':>7}   {'refs spread':>11} {'refs stdev/median':>17}")
    for est in ESTIMATORS:
        f = ESTIMATORS[est]
        refs = [f(d["repeat_ms"]) for r in runs for d in r["dense_references"]]
        # Each run's references relative to that run's median, so runs at different loads pool.
        rel = []
        for r in runs:
            v = [f(d["repeat_ms"]) for d in r["dense_references"]]
            m = statistics.median(v)
            rel += [x / m for x in v]
        for combine in ("mean2", "pooled"):
            s = [x[2] for r in runs for x in speedups(r, est, combine) if x[1]]
            if not s:
                continue
            print(f"{est:10} {combine:8} {len(s):3d} {statistics.median(s):7.3f} "
                  f"{spread(s):7.1%} {max(abs(x - 1) for x in s):8.3f} "
                  f"{statistics.stdev(s) if len(s) > 1 else 0:7.3f}   "
                  f"{spread(refs):11.1%} {statistics.stdev(rel):17.1%}")
    if len(runs) > 1:
        print()
        print("non-dense candidates: speedup spread across runs ((max - min) / median per "
              "candidate), median and max over candidates")
        for est in ESTIMATORS:
            for combine in ("mean2", "pooled"):
                per = {}
                for r in runs:
                    for idx, is_dense, s in speedups(r, est, combine):
                        if not is_dense:
                            per.setdefault(idx, []).append(s)
                sp = [spread(v) for v in per.values() if len(v) == len(runs)]
                if sp:
                    print(f"{est:10} {combine:8} {len(sp):3d} candidates: median "
                          f"{statistics.median(sp):6.1%}, max {max(sp):6.1%}")
    print()
    print("within-measurement repeat spread ((max - min) / median of one measurement's repeats)")
    within = [spread(c["repeat_ms"]) for r in runs for c in r["candidates"] if c.get("repeat_ms")]
    within += [spread(d["repeat_ms"]) for r in runs for d in r["dense_references"]]
    print(f"  {len(within)} measurements: median {statistics.median(within):.1%}, "
          f"max {max(within):.1%}")


def run(args):
    os.makedirs(args.out, exist_ok=True)
    config = args.config
    if args.pairing:
        # The same config with latency.pairing set, beside the original so relative paths hold.
        with open(args.config) as f:
            doc = json.load(f)
        doc.setdefault("latency", {})["pairing"] = args.pairing
        config = os.path.join(os.path.dirname(os.path.abspath(args.config)),
                              f".timing-{args.pairing}-{os.getpid()}.json")
        with open(config, "w") as f:
            json.dump(doc, f)
    try:
        paths = run_all(args, config)
    finally:
        if config != args.config:
            os.remove(config)
    analyze(paths)


def run_all(args, config):
    paths = []
    for i in range(args.runs):
        before = loadavg()
        cmd = [args.sparsetune, "bench", "evaluate", config, "--json",
               "--candidates", str(args.candidates), "--dense-every", str(args.dense_every),
               "--seed", str(args.seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.strip()}")
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        result["loadavg_before"] = before
        result["loadavg_after"] = loadavg()
        path = os.path.join(args.out, f"run-{i}.json")
        with open(path, "w") as f:
            json.dump(result, f)
        paths.append(path)
        print(f"{path}: load {before} -> {result['loadavg_after']}", file=sys.stderr)
    return paths


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run bench evaluate --runs times, then analyze")
    r.add_argument("--sparsetune", required=True, help="the sparsetune executable")
    r.add_argument("--config", required=True, help="job config")
    r.add_argument("--runs", type=int, default=2)
    r.add_argument("--candidates", type=int, default=24)
    r.add_argument("--dense-every", type=int, default=4)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--out", required=True, help="folder for the runs' JSON")
    r.add_argument("--pairing", choices=["interleaved", "bracketed"],
                   help="set latency.pairing (default: the config's, else the evaluator's)")
    a = sub.add_parser("analyze", help="analyze saved bench evaluate JSON files")
    a.add_argument("files", nargs="+")
    args = p.parse_args()
    if args.command == "run":
        run(args)
    else:
        analyze(args.files)


if __name__ == "__main__":
    main()
