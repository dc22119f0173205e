// `sparsetune bench attention [--device cpu|cuda] [--dtype T] [--threads N] [--grid F,H,W]
// [--heads N] [--head-dim D] [--block N] [--text N] [--repeats N] [--json]`: times the runtime's
// attention patterns against dense SDPA.
// `sparsetune bench attention --device cuda --shape S [--sparsity 0,0.5,0.8,0.9] [--dtype T]
// [--block 128] [--repeats N] [--json]`: the CUDA block-sparse kernel at a model's attention shape
// against dense SDPA, timed by the CUPTI profiler.
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <string>

#include <torch/torch.h>

#include "cli/commands.h"
#include "core/error.h"
#include "evaluators/shape_workload.h"
#include "kernels/bench.h"
#include "kernels/block_attention.h"
#include "kernels/cuda/attn_bench.h"
#include "profiler/profiler.h"

namespace sparsetune::cli {

namespace {

struct BenchCliOptions {
  std::string device = "cpu";    // torch device: cpu, cuda, cuda:N
  std::string dtype = "float32"; // q/k/v dtype; bfloat16/float16 only off the CPU
  int64_t threads = 0;           // intra-op CPU threads; 0 = libtorch's default
  std::vector<int64_t> grid;     // F,H,W; empty = default
  BenchOptions bench;
  bool json = false;             // one JSON object instead of a table
  std::string shape;             // model shape for the CUDA kernel bench; empty = runtime bench
  std::vector<double> sparsities = {0.0, 0.5, 0.8, 0.9};  // block sparsities (--shape only)
  bool dtype_given = false;      // --dtype was passed (the --shape bench defaults to bfloat16)
  bool block_given = false;      // --block was passed (the --shape bench defaults to 128)
};

int RunShapeBench(BenchCliOptions& o) {
  const ModelGeometry g = ShapeGeometry(o.shape, 1, 1);
  CudaBenchOptions c;
  c.shape = o.shape;
  c.batch = 1;
  c.heads = g.heads;
  c.tokens = g.tokens();
  c.head_dim = g.head_dim;
  c.block = o.block_given ? o.bench.block : 128;
  c.sparsities = o.sparsities;
  c.dtype = o.dtype_given ? o.dtype : "bfloat16";
  c.device = o.device;
  c.seed = o.bench.seed;
  c.geometry = g;
  if (o.bench.repeats < 1) throw InputError("bench attention: --repeats must be >= 1");
  std::string why;
  std::unique_ptr<Profiler> profiler = MakeProfiler(true, &why);
  const int repeats = static_cast<int>(o.bench.repeats);
  auto measure = [&](const std::function<void()>& region) {
    return profiler->measure(region, 2, repeats).median_ns / 1e6;
  };
  const CudaBenchReport r = BenchAttentionCuda(c, measure);
  if (o.json) {
    std::cout << CudaBenchToJson(c, r, profiler->source()).dump() << "\n";
    return 0;
  }
  std::cout << "attention on " << r.card << " (" << c.dtype << ", " << profiler->source()
            << (why.empty() ? "" : " (" + why + ")") << "): " << c.shape << " B=" << c.batch
            << " H=" << c.heads << " N=" << c.tokens << " D=" << c.head_dim << ", block "
            << c.block << ", median of " << repeats << "\n";
  std::printf("%-12s %9s %10s %9s %8s %10s\n", "path", "sparsity", "time_ms", "TFLOP/s", "speedup",
              "peak_MiB");
  for (const CudaBenchRow& row : r.rows)
    std::printf("%-12s %9.3f %10.3f %9.1f %8.2f %10.1f\n", row.path.c_str(), row.sparsity,
                row.time_ms, row.tflops, row.speedup, row.peak_mib);
  std::cout << r.mask_predict_note << "\n";
  return 0;
}

int RunBench(BenchCliOptions& o) {
  if (!o.shape.empty()) return RunShapeBench(o);
  if (o.threads < 0) throw InputError("bench attention: --threads must be >= 0");
  if (o.threads > 0) torch::set_num_threads(static_cast<int>(o.threads));
  o.bench.device = o.device;
  o.bench.dtype = o.dtype;
  if (!o.grid.empty()) {
    if (o.grid.size() != 3) throw InputError("bench attention: --grid takes F,H,W");
    o.bench.grid = {o.grid[0], o.grid[1], o.grid[2]};
  }
  const std::vector<BenchRow> rows = BenchAttention(o.bench);
  if (o.json) {
    std::cout << BenchToJson(o.bench, rows).dump() << "\n";
    return 0;
  }
  const BenchOptions& b = o.bench;
  std::cout << "attention on " << o.device << " (" << o.dtype << ", "
            << torch::get_num_threads() << " CPU threads, CPU matmul "
            << CpuMatmulName(GetCpuMatmul()) << "): grid " << b.grid[0] << "x" << b.grid[1]
            << "x" << b.grid[2]
            << ", " << b.heads << " heads x " << b.head_dim << ", block " << b.block
            << ", text " << b.text_tokens << ", batch " << b.batch << "; median of " << b.repeats
            << " calls, each row interleaved with dense SDPA calls\n";
  std::printf("%-14s %5s %4s %7s %6s %9s %9s %7s %5s %9s %7s\n", "pattern", "param", "sink",
              "density", "ideal", "dense_ms", "ms", "speedup", "eff", "cached_ms", "speedup");
  for (const BenchRow& r : rows) {
    std::printf("%-14s %5.2f %4s %7.3f %5.2fx %9.2f %9.2f %6.2fx %4.0f%%", r.pattern.c_str(),
                r.param, r.pattern != "block_sparse" ? "-" : r.sink ? "yes" : "no", r.density,
                r.ideal, r.dense_ms, r.time_ms, r.speedup, 100.0 * r.efficiency);
    if (r.cached_ms > 0)
      std::printf(" %9.2f %6.2fx\n", r.cached_ms, r.cached_speedup);
    else
      std::printf(" %9s %7s\n", "-", "-");
  }
  std::cout << "density: fraction of q.k pairs computed; ideal = 1/density (the speedup of a kernel "
               "as fast per pair as dense); eff = speedup/ideal.\nblock_sparse ms rebuilds its mask "
               "and plan every call (mask_refresh 1); cached_ms reuses them (steps between "
               "refreshes). sink: first-frame rows and columns dense.\nload average (1/5/15 min): "
            << LoadAverage() << "\n";
  return 0;
}

}  // namespace

void AddBenchCommand(CLI::App& app, int& exit_code) {
  auto o = std::make_shared<BenchCliOptions>();
  CLI::App* bench = app.add_subcommand("bench", "Micro-benchmarks of the sparse-attention runtime");
  bench->require_subcommand(1);
  CLI::App* cmd = bench->add_subcommand(
      "attention",
      "Time dense SDPA and each sparse pattern (block_sparse at keeps 0.1/0.2/0.3/0.5 with the "
      "first-frame sink, 0.2 and 1 (every block: the sparse kernel's dense rate) without; spatial, temporal, textural at densities 0.2/0.4) at one "
      "shape, interleaved with dense calls; prints time, realized density, speedup vs dense, the "
      "ideal speedup 1/density and the efficiency speedup/ideal");
  cmd->add_option("--device", o->device, "cpu, cuda or cuda:N (default cpu)");
  cmd->add_option("--dtype", o->dtype, "float32 (default), or bfloat16/float16 on cuda");
  cmd->add_option("--threads", o->threads, "Intra-op CPU threads (default: libtorch's choice)");
  cmd->add_option("--grid", o->grid, "Video grid F,H,W in tokens (default 8,32,32)")->delimiter(',');
  cmd->add_option("--heads", o->bench.heads, "Attention heads (default 4)");
  cmd->add_option("--head-dim", o->bench.head_dim, "Channels per head (default 64)");
  cmd->add_option("--block", o->bench.block, "Tokens per block (default 64)");
  cmd->add_option("--text", o->bench.text_tokens, "Text tokens (default 0)");
  cmd->add_option("--repeats", o->bench.repeats, "Timed calls per row (default 5)");
  cmd->add_option("--cpu-matmul", o->bench.cpu_matmul,
                  "Matmul of the CPU sparse kernels: brgemm (libtorch's oneDNN micro-kernel, the "
                  "default where libtorch has it) or sgemm (the BLAS libtorch links)");
  cmd->add_flag("--json", o->json, "Print one JSON object instead of a table");
  cmd->add_option("--shape", o->shape,
                  "CUDA kernel bench at a model shape: wan2.1-1.3b-480p, hunyuan-720p, cogvideox-5b "
                  "(dense SDPA, our kernel dense and at each --sparsity; CUPTI timing)");
  cmd->add_option("--sparsity", o->sparsities,
                  "Block sparsities for --shape (default 0,0.5,0.8,0.9)")
      ->delimiter(',');
  cmd->callback([o, cmd, &exit_code] {
    o->dtype_given = cmd->count("--dtype") > 0;
    o->block_given = cmd->count("--block") > 0;
    exit_code = RunBench(*o);
  });
}

}  // namespace sparsetune::cli
