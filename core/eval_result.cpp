#include "core/eval_result.h"

namespace sparsetune {

namespace {

// JSON has no NaN/inf; they are stored as null and read back as NaN.
Json Number(double x) { return std::isfinite(x) ? Json(x) : Json(nullptr); }
double ReadNumber(const Json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return EvalResult::kNaN;
  return it->get<double>();
}

}  // namespace

Json ToJson(const KernelTime& k) {
  return Json{{"name", k.name},         {"category", k.category}, {"launches", k.launches},
              {"total_ns", k.total_ns}, {"mean_ns", k.mean_ns},   {"min_ns", k.min_ns},
              {"median_ns", k.median_ns}};
}

Json ToJson(const EvalResult& r) {
  Json kernels = Json::array();
  for (const KernelTime& k : r.kernels) kernels.push_back(ToJson(k));
  return Json{{"ok", r.ok},
              {"error", r.error},
              {"psnr", Number(r.psnr)},
              {"ssim", Number(r.ssim)},
              {"psnr_heldout", Number(r.psnr_heldout)},
              {"ssim_heldout", Number(r.ssim_heldout)},
              {"latency_ms", Number(r.latency_ms)},
              {"dense_latency_ms", Number(r.dense_latency_ms)},
              {"speedup", Number(r.speedup)},
              {"density", Number(r.density)},
              {"token_density", Number(r.token_density)},
              {"latency_spread", Number(r.latency_spread)},
              {"latency_source", r.latency_source},
              {"kernels", kernels},
              {"extra", r.extra}};
}

EvalResult EvalResultFromJson(const Json& j) {
  EvalResult r;
  r.ok = j.value("ok", false);
  r.error = j.value("error", std::string());
  r.psnr = ReadNumber(j, "psnr");
  r.ssim = ReadNumber(j, "ssim");
  r.psnr_heldout = ReadNumber(j, "psnr_heldout");
  r.ssim_heldout = ReadNumber(j, "ssim_heldout");
  r.latency_ms = ReadNumber(j, "latency_ms");
  r.dense_latency_ms = ReadNumber(j, "dense_latency_ms");
  r.speedup = ReadNumber(j, "speedup");
  r.density = ReadNumber(j, "density");
  r.token_density = ReadNumber(j, "token_density");
  r.latency_spread = ReadNumber(j, "latency_spread");
  r.latency_source = j.value("latency_source", std::string());
  if (auto it = j.find("kernels"); it != j.end() && it->is_array()) {
    for (const Json& k : *it) {
      KernelTime t;
      t.name = k.value("name", std::string());
      t.category = k.value("category", std::string());
      t.launches = k.value("launches", int64_t{0});
      t.total_ns = k.value("total_ns", 0.0);
      t.mean_ns = k.value("mean_ns", 0.0);
      t.min_ns = k.value("min_ns", 0.0);
      t.median_ns = k.value("median_ns", 0.0);
      r.kernels.push_back(t);
    }
  }
  if (auto it = j.find("extra"); it != j.end()) r.extra = *it;
  return r;
}

}  // namespace sparsetune
