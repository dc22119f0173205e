#include <random>

#include "core/eval_result.h"
#include "tests/catch.h"

TEST_CASE("EvalResult JSON round trip keeps values and NaN", "[core]") {
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> u(0.0, 100.0);
  sparsetune::EvalResult r;
  r.ok = true;
  r.psnr = u(rng);
  r.ssim = u(rng) / 100.0;
  r.latency_ms = u(rng);
  r.dense_latency_ms = u(rng);
  r.speedup = r.dense_latency_ms / r.latency_ms;
  r.density = u(rng) / 100.0;
  r.latency_source = "wall_clock";
  sparsetune::KernelTime k;
  k.name = "sparse_attn_fwd";
  k.category = "attention";
  k.launches = 7;
  k.total_ns = u(rng) * 1e6;
  k.median_ns = u(rng) * 1e3;
  r.kernels.push_back(k);
  r.extra["samples"] = {u(rng), u(rng)};

  const sparsetune::EvalResult back = sparsetune::EvalResultFromJson(
      sparsetune::Json::parse(sparsetune::ToJson(r).dump()));
  CHECK(back.ok);
  CHECK(back.psnr == r.psnr);
  CHECK(back.ssim == r.ssim);
  CHECK(back.speedup == r.speedup);
  CHECK(std::isnan(back.psnr_heldout));  // NaN travels as null
  REQUIRE(back.kernels.size() == 1);
  CHECK(back.kernels[0].name == "sparse_attn_fwd");
  CHECK(back.kernels[0].launches == 7);
  CHECK(back.kernels[0].total_ns == k.total_ns);
  CHECK(back.extra == r.extra);
}
