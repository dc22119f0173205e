// PSNR, SSIM and attention-error tests. The fixture cases compare against scikit-image values
// written by tests/fixtures/metrics/make_fixtures.py.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "core/error.h"
#include "metrics/metrics.h"
#include "tests/catch.h"

namespace st = sparsetune;

namespace {

const std::string kFixtureDir = std::string(SPARSETUNE_TEST_DATA) + "/fixtures/metrics/";

torch::Tensor LoadBin(const std::string& name, const std::vector<int64_t>& shape) {
  int64_t numel = 1;
  for (int64_t s : shape) numel *= s;
  std::ifstream in(kFixtureDir + name, std::ios::binary | std::ios::ate);
  REQUIRE(in.good());
  REQUIRE(static_cast<int64_t>(in.tellg()) == numel * 8);
  in.seekg(0);
  // Fixtures are little-endian float64, as is every platform we build on.
  std::vector<double> data(static_cast<size_t>(numel));
  in.read(reinterpret_cast<char*>(data.data()), numel * 8);
  return torch::tensor(data, torch::dtype(torch::kDouble)).reshape(shape);
}

// Uniform random frames in [0, 1] and a noisy copy, clipped like real decoded frames.
std::pair<torch::Tensor, torch::Tensor> NoisyPair(std::vector<int64_t> shape, double sigma,
                                                  uint64_t seed) {
  torch::manual_seed(seed);
  torch::Tensor ref = torch::rand(shape, torch::kDouble);
  torch::Tensor test = (ref + sigma * torch::randn(shape, torch::kDouble)).clamp(0, 1);
  return {ref, test};
}

}  // namespace

TEST_CASE("PSNR and SSIM agree with scikit-image on the fixtures", "[metrics]") {
  std::ifstream in(kFixtureDir + "cases.json");
  REQUIRE(in.good());
  const nlohmann::json doc = nlohmann::json::parse(in);
  REQUIRE(doc.at("cases").size() == 5);
  double max_ssim_diff = 0, max_psnr_diff = 0;
  for (const auto& c : doc.at("cases")) {
    const auto shape = c.at("shape").get<std::vector<int64_t>>();
    const torch::Tensor ref = LoadBin(c.at("ref").get<std::string>(), shape);
    const torch::Tensor test = LoadBin(c.at("test").get<std::string>(), shape);
    const auto psnr = c.at("frame_psnr").get<std::vector<double>>();
    const auto ssim = c.at("frame_ssim").get<std::vector<double>>();
    INFO("case " << c.at("name").get<std::string>());
    if (shape.size() == 3) {
      REQUIRE(psnr.size() == 1);
      const double p = st::Psnr(ref, test), s = st::Ssim(ref, test);
      CHECK(std::abs(p - psnr[0]) < 1e-6);
      CHECK(std::abs(s - ssim[0]) < 1e-4);
      max_psnr_diff = std::max(max_psnr_diff, std::abs(p - psnr[0]));
      max_ssim_diff = std::max(max_ssim_diff, std::abs(s - ssim[0]));
    } else {
      const st::VideoQuality q = st::CompareVideos(ref, test);
      REQUIRE(q.frame_psnr.size() == psnr.size());
      REQUIRE(q.frame_ssim.size() == ssim.size());
      for (size_t f = 0; f < psnr.size(); ++f) {
        CHECK(std::abs(q.frame_psnr[f] - psnr[f]) < 1e-6);
        CHECK(std::abs(q.frame_ssim[f] - ssim[f]) < 1e-4);
        max_psnr_diff = std::max(max_psnr_diff, std::abs(q.frame_psnr[f] - psnr[f]));
        max_ssim_diff = std::max(max_ssim_diff, std::abs(q.frame_ssim[f] - ssim[f]));
      }
      CHECK(std::abs(q.psnr - c.at("video_psnr").get<double>()) < 1e-6);
      CHECK(std::abs(q.ssim - c.at("video_ssim").get<double>()) < 1e-4);
    }
  }
  // The implementations should differ by rounding only; 1e-4 is the contract, this is the reality.
  INFO("max |SSIM - skimage| = " << max_ssim_diff << ", max |PSNR - skimage| = " << max_psnr_diff);
  CHECK(max_ssim_diff < 1e-10);
  CHECK(max_psnr_diff < 1e-9);
}

TEST_CASE("identical inputs give SSIM 1 and the PSNR cap", "[metrics]") {
  const auto [ref, unused] = NoisyPair({3, 24, 20}, 0.1, 1);
  CHECK(st::Psnr(ref, ref.clone()) == st::kPsnrCap);
  CHECK(st::Ssim(ref, ref.clone()) == Approx(1.0).margin(1e-12));
  const torch::Tensor video = torch::stack({ref, ref.flip(2)});
  const st::VideoQuality q = st::CompareVideos(video, video.clone());
  CHECK(q.psnr == st::kPsnrCap);
  CHECK(q.ssim == Approx(1.0).margin(1e-12));
  REQUIRE(q.frame_psnr.size() == 2);
  CHECK(q.frame_psnr[1] == st::kPsnrCap);
  // A difference too small for 100 dB is capped as well: MSE 1e-14 would be 140 dB.
  CHECK(st::Psnr(ref, ref + 1e-7) == st::kPsnrCap);
}

TEST_CASE("PSNR follows its definition and the data range", "[metrics]") {
  const auto [ref, unused] = NoisyPair({3, 16, 16}, 0.1, 2);
  // A uniform offset of 0.1 is MSE 0.01: 20 dB at range 1, 20 + 20 log10(2) at range 2.
  CHECK(st::Psnr(ref, ref + 0.1) == Approx(20.0).epsilon(1e-12));
  CHECK(st::Psnr(ref, ref - 0.1, 2.0) == Approx(20.0 + 20.0 * std::log10(2.0)).epsilon(1e-12));
  // Any shape: a flat vector gives the same result as the frame.
  CHECK(st::Psnr(ref.flatten(), (ref + 0.1).flatten()) == Approx(20.0).epsilon(1e-12));
}

TEST_CASE("PSNR and SSIM are symmetric and fall with noise", "[metrics]") {
  const auto [ref, test] = NoisyPair({3, 19, 27}, 0.08, 3);
  CHECK(st::Psnr(ref, test) == Approx(st::Psnr(test, ref)).epsilon(1e-14));
  CHECK(st::Ssim(ref, test) == Approx(st::Ssim(test, ref)).epsilon(1e-14));
  double last_ssim = 1.0, last_psnr = st::kPsnrCap;
  for (double sigma : {0.01, 0.05, 0.2}) {
    const torch::Tensor noisy = (ref + sigma * torch::randn_like(ref)).clamp(0, 1);
    const double s = st::Ssim(ref, noisy), p = st::Psnr(ref, noisy);
    CHECK(s < last_ssim);
    CHECK(p < last_psnr);
    CHECK(s > 0.0);
    last_ssim = s;
    last_psnr = p;
  }
}

TEST_CASE("SSIM of a frame is the mean of its channels' SSIM", "[metrics]") {
  const auto [ref, test] = NoisyPair({3, 15, 13}, 0.1, 4);
  double sum = 0;
  for (int64_t c = 0; c < 3; ++c) sum += st::Ssim(ref.slice(0, c, c + 1), test.slice(0, c, c + 1));
  CHECK(st::Ssim(ref, test) == Approx(sum / 3).epsilon(1e-13));
}

TEST_CASE("video scores are per frame and averaged over frames", "[metrics]") {
  const auto [ref, test] = NoisyPair({3, 3, 12, 14}, 0.05, 5);
  // Frame 1 identical: its capped 100 dB enters the mean as it is.
  test[1] = ref[1];
  const st::VideoQuality q = st::CompareVideos(ref, test);
  REQUIRE(q.frame_psnr.size() == 3);
  REQUIRE(q.frame_ssim.size() == 3);
  double psnr_sum = 0, ssim_sum = 0;
  for (int64_t f = 0; f < 3; ++f) {
    CHECK(q.frame_psnr[f] == Approx(st::Psnr(ref[f], test[f])).epsilon(1e-13));
    CHECK(q.frame_ssim[f] == Approx(st::Ssim(ref[f], test[f])).epsilon(1e-13));
    psnr_sum += q.frame_psnr[f];
    ssim_sum += q.frame_ssim[f];
  }
  CHECK(q.frame_psnr[1] == st::kPsnrCap);
  CHECK(q.frame_psnr[0] < 40.0);
  CHECK(q.psnr == Approx(psnr_sum / 3).epsilon(1e-14));
  CHECK(q.ssim == Approx(ssim_sum / 3).epsilon(1e-14));
}

TEST_CASE("integer and float32 frames are scored in float64", "[metrics]") {
  torch::manual_seed(6);
  const torch::Tensor a = torch::randint(0, 256, {3, 16, 16}, torch::kUInt8);
  const torch::Tensor b = (a.to(torch::kInt) + torch::randint(-20, 21, {3, 16, 16}, torch::kInt))
                              .clamp(0, 255)
                              .to(torch::kUInt8);
  const torch::Tensor af = a.to(torch::kDouble) / 255, bf = b.to(torch::kDouble) / 255;
  // SSIM's constants scale with the range, so [0, 255] with range 255 equals [0, 1] with range 1.
  CHECK(st::Ssim(a, b, 255.0) == Approx(st::Ssim(af, bf)).epsilon(1e-12));
  CHECK(st::Psnr(a, b, 255.0) == Approx(st::Psnr(af, bf)).epsilon(1e-12));
  CHECK(st::Ssim(af.to(torch::kFloat), bf.to(torch::kFloat)) ==
        Approx(st::Ssim(af, bf)).margin(1e-6));
}

TEST_CASE("PSNR and SSIM reject bad inputs with clear messages", "[metrics]") {
  const auto [ref, test] = NoisyPair({3, 16, 16}, 0.1, 7);
  SECTION("shape mismatch") {
    REQUIRE_THROWS_WITH(st::Ssim(ref, test.slice(2, 0, 15)),
                        "Ssim: ref and test shapes differ: [3, 16, 16] vs [3, 16, 15]");
    REQUIRE_THROWS_AS(st::Psnr(ref, test.flatten()), st::ShapeError);
    REQUIRE_THROWS_AS(st::CompareVideos(ref.unsqueeze(0), test.unsqueeze(0).repeat({2, 1, 1, 1})),
                      st::ShapeError);
  }
  SECTION("wrong rank") {
    REQUIRE_THROWS_WITH(st::Ssim(ref[0], test[0]),
                        "Ssim: ref has shape [16, 16], expected a frame [C, H, W]");
    REQUIRE_THROWS_WITH(st::CompareVideos(ref, test),
                        "CompareVideos: ref has shape [3, 16, 16], expected a video [T, C, H, W]");
  }
  SECTION("frames smaller than the window") {
    REQUIRE_THROWS_WITH(
        st::Ssim(ref.slice(1, 0, 10), test.slice(1, 0, 10)),
        "Ssim: frames are 10x16 pixels; SSIM needs at least 11x11 (the Gaussian window)");
    REQUIRE_THROWS_AS(st::CompareVideos(ref.slice(2, 0, 10).unsqueeze(0),
                                        test.slice(2, 0, 10).unsqueeze(0)),
                      st::ShapeError);
    // PSNR has no window: any size is fine.
    REQUIRE_NOTHROW(st::Psnr(ref.slice(2, 0, 2), test.slice(2, 0, 2)));
  }
  SECTION("NaN and Inf") {
    torch::Tensor bad = test.clone();
    bad[1][3][4] = std::numeric_limits<double>::quiet_NaN();
    REQUIRE_THROWS_WITH(st::Ssim(ref, bad), "Ssim: test contains NaN or Inf");
    REQUIRE_THROWS_AS(st::Psnr(ref, bad), st::ShapeError);
    bad = ref.clone();
    bad[0][0][0] = std::numeric_limits<double>::infinity();
    REQUIRE_THROWS_WITH(st::Psnr(bad, test), "Psnr: ref contains NaN or Inf");
    REQUIRE_THROWS_AS(st::CompareVideos(bad.unsqueeze(0), test.unsqueeze(0)), st::ShapeError);
  }
  SECTION("data range") {
    REQUIRE_THROWS_WITH(st::Psnr(ref, test, 0.0),
                        "Psnr: data_range must be finite and > 0, got 0.000000");
    REQUIRE_THROWS_AS(st::Ssim(ref, test, -1.0), st::InputError);
    REQUIRE_THROWS_AS(st::CompareVideos(ref.unsqueeze(0), test.unsqueeze(0),
                                        std::numeric_limits<double>::quiet_NaN()),
                      st::InputError);
  }
  SECTION("undefined, empty, bool and complex tensors") {
    REQUIRE_THROWS_WITH(st::Psnr(torch::Tensor(), test), "Psnr: ref is an undefined tensor");
    REQUIRE_THROWS_AS(st::Psnr(torch::empty({0}), torch::empty({0})), st::ShapeError);
    REQUIRE_THROWS_AS(st::Psnr(ref > 0.5, test > 0.5), st::ShapeError);
    REQUIRE_THROWS_AS(st::Psnr(ref.to(torch::kComplexDouble), test.to(torch::kComplexDouble)),
                      st::ShapeError);
  }
}

namespace {

// Reference errors from a plain loop over float64 values.
st::AttentionError DirectErrors(const torch::Tensor& ref, const torch::Tensor& test) {
  const torch::Tensor r = ref.to(torch::kDouble).flatten().contiguous();
  const torch::Tensor t = test.to(torch::kDouble).flatten().contiguous();
  const double* pr = r.data_ptr<double>();
  const double* pt = t.data_ptr<double>();
  double rr = 0, tt = 0, rt = 0, dd = 0, mx = 0;
  for (int64_t i = 0; i < r.numel(); ++i) {
    rr += pr[i] * pr[i];
    tt += pt[i] * pt[i];
    rt += pr[i] * pt[i];
    dd += (pt[i] - pr[i]) * (pt[i] - pr[i]);
    mx = std::max(mx, std::abs(pt[i] - pr[i]));
  }
  return {std::sqrt(dd / rr), rt / std::sqrt(rr * tt), mx};
}

}  // namespace

TEST_CASE("attention errors match a direct float64 formula", "[metrics]") {
  torch::manual_seed(8);
  const torch::Tensor ref = torch::randn({2, 4, 16, 8});
  const torch::Tensor test = ref + 0.05 * torch::randn({2, 4, 16, 8});
  const st::AttentionError e = st::CompareAttention(ref, test);
  const st::AttentionError d = DirectErrors(ref, test);
  CHECK(e.rel_l2 == Approx(d.rel_l2).epsilon(1e-12));
  CHECK(e.cosine == Approx(d.cosine).epsilon(1e-12));
  CHECK(e.max_abs == Approx(d.max_abs).epsilon(1e-12));
  CHECK(e.rel_l2 > 0.01);
  CHECK(e.rel_l2 < 0.1);

  const std::vector<st::AttentionError> heads = st::CompareAttentionPerHead(ref, test);
  REQUIRE(heads.size() == 4);
  double max_abs = 0;
  for (int64_t h = 0; h < 4; ++h) {
    const st::AttentionError dh = DirectErrors(ref.select(1, h), test.select(1, h));
    CHECK(heads[h].rel_l2 == Approx(dh.rel_l2).epsilon(1e-12));
    CHECK(heads[h].cosine == Approx(dh.cosine).epsilon(1e-12));
    CHECK(heads[h].max_abs == Approx(dh.max_abs).epsilon(1e-12));
    max_abs = std::max(max_abs, heads[h].max_abs);
  }
  CHECK(max_abs == Approx(e.max_abs).epsilon(1e-15));
}

TEST_CASE("attention errors of scaled, equal and zero outputs", "[metrics]") {
  torch::manual_seed(9);
  const torch::Tensor x = torch::randn({1, 2, 8, 4}, torch::kDouble);
  const st::AttentionError doubled = st::CompareAttention(x, 2 * x);
  CHECK(doubled.cosine == Approx(1.0).margin(1e-14));
  CHECK(doubled.rel_l2 == Approx(1.0).epsilon(1e-14));
  const st::AttentionError same = st::CompareAttention(x, x.clone());
  CHECK(same.rel_l2 == 0.0);
  CHECK(same.max_abs == 0.0);
  CHECK(same.cosine == Approx(1.0).margin(1e-14));
  const st::AttentionError negated = st::CompareAttention(x, -x);
  CHECK(negated.cosine == Approx(-1.0).margin(1e-14));
  CHECK(negated.rel_l2 == Approx(2.0).epsilon(1e-14));

  const torch::Tensor zero = torch::zeros_like(x);
  const st::AttentionError both_zero = st::CompareAttention(zero, zero);
  CHECK(both_zero.rel_l2 == 0.0);
  CHECK(both_zero.cosine == 1.0);
  const st::AttentionError ref_zero = st::CompareAttention(zero, x);
  CHECK(std::isinf(ref_zero.rel_l2));
  CHECK(ref_zero.cosine == 0.0);
  CHECK(st::CompareAttention(x, zero).rel_l2 == Approx(1.0).epsilon(1e-14));
}

TEST_CASE("attention errors reject bad inputs", "[metrics]") {
  torch::manual_seed(10);
  const torch::Tensor ref = torch::randn({1, 2, 8, 4});
  torch::Tensor test = ref + 0.1 * torch::randn({1, 2, 8, 4});
  REQUIRE_THROWS_WITH(st::CompareAttention(ref, test.slice(2, 0, 7)),
                      "CompareAttention: ref and test shapes differ: [1, 2, 8, 4] vs [1, 2, 7, 4]");
  REQUIRE_THROWS_WITH(
      st::CompareAttentionPerHead(ref[0], test[0]),
      "CompareAttentionPerHead: ref has shape [2, 8, 4], expected attention outputs [B, H, N, D]");
  test[0][1][2][3] = std::numeric_limits<float>::quiet_NaN();
  REQUIRE_THROWS_WITH(st::CompareAttention(ref, test),
                      "CompareAttention: test contains NaN or Inf");
  REQUIRE_THROWS_AS(st::CompareAttentionPerHead(ref, test), st::ShapeError);
}

TEST_CASE("CUDA inputs give the CPU results", "[metrics][cuda]") {
  if (!torch::cuda::is_available()) {
    WARN("skipped: libtorch sees no CUDA device");
    return;
  }
  const auto [ref, test] = NoisyPair({2, 3, 20, 18}, 0.05, 11);
  const torch::Tensor ref_gpu = ref.to(torch::kCUDA), test_gpu = test.to(torch::kCUDA);
  const st::VideoQuality cpu = st::CompareVideos(ref, test);
  const st::VideoQuality gpu = st::CompareVideos(ref_gpu, test_gpu);
  CHECK(gpu.psnr == Approx(cpu.psnr).epsilon(1e-12));
  CHECK(gpu.ssim == Approx(cpu.ssim).epsilon(1e-12));
  const st::AttentionError e_cpu = st::CompareAttention(ref, test);
  const st::AttentionError e_gpu = st::CompareAttention(ref_gpu, test_gpu);
  CHECK(e_gpu.rel_l2 == Approx(e_cpu.rel_l2).epsilon(1e-12));
  CHECK(e_gpu.cosine == Approx(e_cpu.cosine).epsilon(1e-12));
  CHECK(e_gpu.max_abs == Approx(e_cpu.max_abs).epsilon(1e-12));
  REQUIRE_THROWS_WITH(st::Psnr(ref, test_gpu), "Psnr: ref is on cpu but test is on cuda:0");
}
