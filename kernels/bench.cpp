#include "kernels/bench.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <functional>

#include <torch/cuda.h>
#include <torch/torch.h>

#include "core/build_info.h"
#include "core/error.h"
#include "kernels/block_attention.h"
#include "kernels/runtime.h"

namespace sparsetune {

namespace {

double Median(std::vector<double> x) {
  std::sort(x.begin(), x.end());
  return x[x.size() / 2];
}

}  // namespace

std::string LoadAverage() {
  std::ifstream f("/proc/loadavg");
  std::string a, b, c;
  if (!(f >> a >> b >> c)) return "";
  return a + " " + b + " " + c;
}

std::vector<BenchRow> BenchAttention(const BenchOptions& o) {
  for (int64_t x : {o.grid[0], o.grid[1], o.grid[2], o.heads, o.head_dim, o.block, o.batch,
                    o.repeats})
    if (x < 1) throw InputError("bench: grid, heads, head-dim, block, batch and repeats must be >= 1");
  if (o.text_tokens < 0) throw InputError("bench: text tokens must be >= 0");
  if (o.cpu_matmul == "brgemm") SetCpuMatmul(CpuMatmul::kBrgemm);
  else if (o.cpu_matmul == "sgemm") SetCpuMatmul(CpuMatmul::kSgemm);
  else if (!o.cpu_matmul.empty())
    throw InputError("bench: --cpu-matmul must be brgemm or sgemm; got '" + o.cpu_matmul + "'");
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(o.device);
  } catch (const std::exception&) {
    throw InputError("bench: unknown device '" + o.device + "' (cpu, cuda, cuda:N)");
  }
  if (!device.is_cpu() && !device.is_cuda())
    throw InputError("bench: device must be cpu or cuda; got '" + o.device + "'");
  if (device.is_cuda() && !torch::cuda::is_available())
    throw InputError("bench: device '" + o.device + "' but no CUDA device is available");
  torch::ScalarType dtype = torch::kFloat32;
  if (o.dtype == "bfloat16") dtype = torch::kBFloat16;
  else if (o.dtype == "float16") dtype = torch::kHalf;
  else if (o.dtype != "float32")
    throw InputError("bench: dtype must be float32, bfloat16 or float16; got '" + o.dtype + "'");
  if (device.is_cpu() && dtype != torch::kFloat32)
    throw InputError("bench: the CPU runtime takes float32 only");
  const bool cuda = device.is_cuda();
  ModelGeometry m;
  m.name = "bench";
  m.layers = 1;
  m.heads = o.heads;
  m.head_dim = o.head_dim;
  m.grid = o.grid;
  m.text_tokens = o.text_tokens;
  m.text_position = o.text_tokens > 0 ? TextPosition::kBack : TextPosition::kNone;
  m.steps = 2;  // step 0 builds block_sparse masks, step 1 reuses them (cached rows)
  m.rope_split = RopeSplitFor(o.head_dim);
  const int64_t n = m.tokens();
  torch::manual_seed(o.seed);
  const auto opts = torch::TensorOptions().dtype(dtype).device(device);
  const torch::Tensor q = torch::randn({o.batch, o.heads, n, o.head_dim}).to(opts);
  const torch::Tensor k = torch::randn({o.batch, o.heads, n, o.head_dim}).to(opts);
  const torch::Tensor v = torch::randn({o.batch, o.heads, n, o.head_dim}).to(opts);

  auto dense_call = [&] { torch::scaled_dot_product_attention(q, k, v); };
  std::vector<double> all_dense;
  std::vector<BenchRow> rows(1);
  rows[0].pattern = "dense_sdpa";
  rows[0].sink = false;

  // Times `fns` round-robin after one warm-up call each (allocations, first touch, mask, layout
  // and plan caches): `repeats` rounds of dense, fns[0], fns[1], ... Returns the median of each
  // (dense first).
  auto interleaved = [&](const std::vector<std::function<void()>>& fns) {
    std::vector<std::function<void()>> all = {dense_call};
    all.insert(all.end(), fns.begin(), fns.end());
    for (const auto& fn : all) fn();
    if (cuda) torch::cuda::synchronize();
    std::vector<std::vector<double>> ms(all.size());
    for (int64_t r = 0; r < o.repeats; ++r)
      for (size_t i = 0; i < all.size(); ++i) {
        const auto t0 = std::chrono::steady_clock::now();
        all[i]();
        if (cuda) torch::cuda::synchronize();  // kernels run asynchronously: time completion
        const auto t1 = std::chrono::steady_clock::now();
        ms[i].push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      }
    all_dense.insert(all_dense.end(), ms[0].begin(), ms[0].end());
    std::vector<double> med;
    for (std::vector<double>& x : ms) med.push_back(Median(x));
    return med;
  };

  auto run = [&](PatternKind kind, double param, bool sink) {
    Schedule s = Schedule::Dense(m);
    s.block_size = o.block;
    s.token_order.kind = TokenOrderKind::kTiles;
    s.token_order.tile = {1, 8, 8};  // RainFusion2.0's spatial tile
    HeadPattern p;
    p.pattern = kind;
    p.density = param;
    p.keep = param;
    p.first_frame_sink = sink;
    s.heads.assign(1, std::vector<HeadPattern>(static_cast<size_t>(o.heads), p));
    // Every call at step 0 rebuilds a block_sparse mask (mask_refresh 1, the default).
    Runtime rt(s);
    std::vector<std::function<void()>> fns = {[&] { rt.attention(q, k, v, 0, 0); }};
    // block_sparse with the mask kept for 2 steps, called at step 1: mask and plan reused.
    Schedule sc = s;
    for (HeadPattern& hp : sc.heads[0]) hp.mask_refresh = 2;
    Runtime cached(sc);
    const bool block_sparse = kind == PatternKind::kBlockSparse;
    if (block_sparse) {
      cached.attention(q, k, v, 0, 0);
      fns.push_back([&] { cached.attention(q, k, v, 1, 0); });
    }
    const std::vector<double> med = interleaved(fns);
    BenchRow row;
    row.pattern = ToString(kind);
    row.param = param;
    row.sink = block_sparse && sink;
    row.dense_ms = med[0];
    row.time_ms = med[1];
    row.density = rt.last_call().density();
    row.speedup = row.dense_ms / row.time_ms;
    row.ideal = 1.0 / row.density;
    row.efficiency = row.speedup / row.ideal;
    if (block_sparse) {
      row.cached_ms = med[2];
      row.cached_speedup = row.dense_ms / row.cached_ms;
    }
    rows.push_back(row);
  };
  for (double keep : o.keeps) run(PatternKind::kBlockSparse, keep, true);
  for (double keep : o.keeps_no_sink) run(PatternKind::kBlockSparse, keep, false);
  for (PatternKind kind : {PatternKind::kSpatial, PatternKind::kTemporal, PatternKind::kTextural})
    for (double d : o.densities) run(kind, d, true);
  if (rows.size() == 1) interleaved({});
  rows[0].time_ms = rows[0].dense_ms = Median(all_dense);
  return rows;
}

Json BenchToJson(const BenchOptions& o, const std::vector<BenchRow>& rows) {
  Json j;
  j["device"] = o.device;
  j["dtype"] = o.dtype;
  j["threads"] = torch::get_num_threads();
  j["cpu_matmul"] = CpuMatmulName(GetCpuMatmul());
  j["commit"] = GetBuildInfo().git_commit;
  j["shape"] = {{"grid", o.grid}, {"heads", o.heads}, {"head_dim", o.head_dim},
                {"block", o.block}, {"text_tokens", o.text_tokens}, {"batch", o.batch},
                {"repeats", o.repeats}};
  j["load_average"] = LoadAverage();
  Json list = Json::array();
  for (const BenchRow& r : rows)
    list.push_back({{"pattern", r.pattern}, {"param", r.param}, {"sink", r.sink},
                    {"time_ms", r.time_ms}, {"dense_ms", r.dense_ms}, {"density", r.density},
                    {"speedup", r.speedup}, {"ideal", r.ideal}, {"efficiency", r.efficiency},
                    {"cached_ms", r.cached_ms}, {"cached_speedup", r.cached_speedup}});
  j["rows"] = list;
  return j;
}

}  // namespace sparsetune
