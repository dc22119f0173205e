#!/usr/bin/env python3
"""FlexAttention (torch.nn.attention.flex_attention, compiled) with a random block mask, side by side
with `sparsetune bench attention --device cuda --shape S`.

Same shapes and the same mask rule as the C++ bench: every (b, h, query block) row keeps exactly
max(1, round((1 - sparsity) * nb)) key blocks, uniform without replacement (an independent draw of
the same distribution, not the same bits). Blocks are given as full blocks (no mask_mod work inside
them); FlexAttention masks the keys past N of the last partial block itself. Timing: CUDA events
around each call, warm-up first, median of --repeats. Dense SDPA is timed the same way as the
anchor for the speedups. One JSON object per line, then a table.

--timer kineto (default) times each call by the device durations of its kernels as recorded by
torch.profiler (Kineto, which reads them from CUPTI): the same quantity as the C++ bench's CUPTI
timing, so the two tools' milliseconds compare directly. --timer events uses CUDA events around
each call (includes launch gaps). Either way: warm-up first, median of --repeats.

  python3 scripts/flex_attention_bench.py --shape wan2.1-1.3b-480p --sparsity 0,0.5,0.8,0.9
"""
import argparse
import json
import math
import statistics
import sys

import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention

SHAPES = {  # heads, tokens, head_dim (evaluators/shape_workload.cpp)
    "wan2.1-1.3b-480p": (12, 21 * 30 * 52, 128),
    "hunyuan-720p": (24, 33 * 45 * 80 + 256, 128),
    "cogvideox-5b": (48, 13 * 30 * 45 + 226, 64),
}


def kernel_ms(fn):
    """Device time of the kernels of one call of fn, from torch.profiler's CUDA activity records."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    total_us = 0.0
    for e in prof.events():
        if str(getattr(e, "device_type", "")).endswith("CUDA"):
            total_us += getattr(e, "device_time", None) or getattr(e, "cuda_time", 0.0) or 0.0
    return total_us / 1000.0


TIMERS_USED = set()  # what actually timed the rows (kineto falls back to events)


def time_ms(fn, repeats, timer="events"):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    if timer == "kineto":
        times = [kernel_ms(fn) for _ in range(repeats)]
        if min(times) > 0:
            TIMERS_USED.add("kineto kernel time")
            return statistics.median(times)
        print("kineto recorded no kernel time; falling back to CUDA events", file=sys.stderr)
    TIMERS_USED.add("cuda_events")
    times = []
    for _ in range(repeats):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def random_full_block_mask(b, h, n, block, sparsity, device):
    nb = (n + block - 1) // block
    keep = max(1, round((1.0 - sparsity) * nb))
    order = torch.rand(b, h, nb, nb, device=device).argsort(dim=-1)
    kept = order[..., :keep].sort(dim=-1).values.to(torch.int32).contiguous()
    full_num = torch.full((b, h, nb), keep, dtype=torch.int32, device=device)
    # No partial blocks: every kept block is a full block.
    zero_num = torch.zeros((b, h, nb), dtype=torch.int32, device=device)
    zero_idx = torch.zeros((b, h, nb, 1), dtype=torch.int32, device=device)
    mask = BlockMask.from_kv_blocks(zero_num, zero_idx, full_num, kept, BLOCK_SIZE=block,
                                    seq_lengths=(n, n), compute_q_blocks=False)
    return mask, 1.0 - keep / nb, keep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", default="wan2.1-1.3b-480p")
    ap.add_argument("--sparsity", default="0,0.5,0.8,0.9")
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--timer", choices=["kineto", "events"], default="kineto")
    args = ap.parse_args()
    heads, n, d = SHAPES[args.shape]
    dtype = getattr(torch, args.dtype)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, heads, n, d, device=dev, dtype=dtype) for _ in range(3))
    card = torch.cuda.get_device_name(dev)
    dense_flops = 4.0 * heads * n * n * d
    sdpa = time_ms(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v), args.repeats,
                   args.timer)
    flex = torch.compile(flex_attention, dynamic=False)
    rows = [{"path": "dense_sdpa", "sparsity": 0.0, "time_ms": sdpa,
             "tflops": dense_flops / (sdpa * 1e9), "speedup": 1.0}]
    nb = (n + args.block - 1) // args.block
    last = n - (nb - 1) * args.block
    for sp in (float(x) for x in args.sparsity.split(",")):
        mask, realized, keep = random_full_block_mask(1, heads, n, args.block, sp, dev)
        # Computed q·k pairs: per row, its query tokens times the tokens of its kept key blocks.
        blen = torch.full((nb,), float(args.block), dtype=torch.float64, device=dev)
        blen[-1] = last
        row_keys = blen[mask.full_kv_indices.long()].sum(-1)  # [1, H, nb]
        flops = 4.0 * d * (row_keys * blen).sum().item()
        t = time_ms(lambda: flex(q, k, v, block_mask=mask), args.repeats, args.timer)
        rows.append({"path": "flex", "sparsity": realized, "time_ms": t,
                     "tflops": flops / (t * 1e9), "speedup": sdpa / t})
    out = {"card": card, "torch": torch.__version__, "shape": args.shape, "heads": heads,
           "tokens": n, "head_dim": d, "block": args.block, "dtype": args.dtype,
           "timing": "%s, median of %d" % (" + ".join(sorted(TIMERS_USED)), args.repeats),
           "rows": rows}
    print(json.dumps(out))
    print(f"flex_attention on {card}: {args.shape} H={heads} N={n} D={d} block {args.block}",
          file=sys.stderr)
    for r in rows:
        print(f"  {r['path']:<10} {r['sparsity']:6.3f} {r['time_ms']:9.3f} ms "
              f"{r['tflops']:7.1f} TFLOP/s {r['speedup']:6.2f}x", file=sys.stderr)


if __name__ == "__main__":
    main()
