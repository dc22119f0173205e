#include "kernels/bench.h"

#include <algorithm>
#include <chrono>
#include <functional>

#include <torch/cuda.h>
#include <torch/torch.h>

#include "core/build_info.h"
#include "core/error.h"
#include "kernels/runtime.h"

namespace sparsetune {

namespace {

double MedianMs(int64_t repeats, bool cuda, const std::function<void()>& fn) {
  fn();  // warm-up: allocations, first-touch, mask and layout caches
  if (cuda) torch::cuda::synchronize();
  std::vector<double> ms;
  for (int64_t i = 0; i < repeats; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    if (cuda) torch::cuda::synchronize();  // kernels run asynchronously: time their completion
    const auto t1 = std::chrono::steady_clock::now();
    ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

std::vector<BenchRow> BenchAttention(const BenchOptions& o) {
  for (int64_t x : {o.grid[0], o.grid[1], o.grid[2], o.heads, o.head_dim, o.block, o.batch,
                    o.repeats})
    if (x < 1) throw InputError("bench: grid, heads, head-dim, block, batch and repeats must be >= 1");
  if (o.text_tokens < 0) throw InputError("bench: text tokens must be >= 0");
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
  m.steps = 1;
  m.rope_split = RopeSplitFor(o.head_dim);
  const int64_t n = m.tokens();
  torch::manual_seed(o.seed);
  const auto opts = torch::TensorOptions().dtype(dtype).device(device);
  const torch::Tensor q = torch::randn({o.batch, o.heads, n, o.head_dim}).to(opts);
  const torch::Tensor k = torch::randn({o.batch, o.heads, n, o.head_dim}).to(opts);
  const torch::Tensor v = torch::randn({o.batch, o.heads, n, o.head_dim}).to(opts);

  std::vector<BenchRow> rows;
  BenchRow dense;
  dense.pattern = "dense_sdpa";
  dense.time_ms = MedianMs(o.repeats, cuda, [&] { torch::scaled_dot_product_attention(q, k, v); });
  rows.push_back(dense);

  auto run = [&](PatternKind kind, double param) {
    Schedule s = Schedule::Dense(m);
    s.block_size = o.block;
    s.token_order.kind = TokenOrderKind::kTiles;
    s.token_order.tile = {1, 8, 8};  // RainFusion2.0's spatial tile
    HeadPattern p;
    p.pattern = kind;
    p.density = param;
    p.keep = param;
    s.heads.assign(1, std::vector<HeadPattern>(static_cast<size_t>(o.heads), p));
    Runtime rt(s);
    BenchRow row;
    row.pattern = ToString(kind);
    row.param = param;
    row.time_ms = MedianMs(o.repeats, cuda, [&] { rt.attention(q, k, v, 0, 0); });
    row.density = rt.last_call().density();
    row.speedup = dense.time_ms / row.time_ms;
    rows.push_back(row);
  };
  for (double keep : o.keeps) run(PatternKind::kBlockSparse, keep);
  for (PatternKind kind : {PatternKind::kSpatial, PatternKind::kTemporal, PatternKind::kTextural})
    for (double d : o.densities) run(kind, d);
  return rows;
}

Json BenchToJson(const BenchOptions& o, const std::vector<BenchRow>& rows) {
  Json j;
  j["device"] = o.device;
  j["dtype"] = o.dtype;
  j["threads"] = torch::get_num_threads();
  j["commit"] = GetBuildInfo().git_commit;
  j["shape"] = {{"grid", o.grid}, {"heads", o.heads}, {"head_dim", o.head_dim},
                {"block", o.block}, {"text_tokens", o.text_tokens}, {"batch", o.batch},
                {"repeats", o.repeats}};
  Json list = Json::array();
  for (const BenchRow& r : rows)
    list.push_back({{"pattern", r.pattern}, {"param", r.param}, {"time_ms", r.time_ms},
                    {"density", r.density}, {"speedup", r.speedup}});
  j["rows"] = list;
  return j;
}

}  // namespace sparsetune
