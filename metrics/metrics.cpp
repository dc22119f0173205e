#include "metrics/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "core/error.h"

namespace sparsetune {
namespace {

std::string ShapeString(const torch::Tensor& t) {
  std::ostringstream os;
  os << t.sizes();
  return os.str();
}

// Validates a (ref, test) pair at the public boundary and returns both as float64 on their device.
// `rank` < 0 accepts any rank; `what` names the expected layout in the message.
std::pair<torch::Tensor, torch::Tensor> CheckedPair(const char* fn, const torch::Tensor& ref,
                                                    const torch::Tensor& test, int64_t rank,
                                                    const char* what) {
  for (const auto* t : {&ref, &test}) {
    const char* name = t == &ref ? "ref" : "test";
    if (!t->defined()) throw ShapeError(std::string(fn) + ": " + name + " is an undefined tensor");
    if (t->is_complex() || t->scalar_type() == torch::kBool) {
      std::ostringstream os;
      os << fn << ": " << name << " has dtype " << t->scalar_type()
         << ", expected a real floating or integer dtype";
      throw ShapeError(os.str());
    }
    if (rank >= 0 && t->dim() != rank) {
      throw ShapeError(std::string(fn) + ": " + name + " has shape " + ShapeString(*t) +
                       ", expected " + what);
    }
  }
  if (!ref.sizes().equals(test.sizes())) {
    throw ShapeError(std::string(fn) + ": ref and test shapes differ: " + ShapeString(ref) +
                     " vs " + ShapeString(test));
  }
  if (ref.device() != test.device()) {
    throw ShapeError(std::string(fn) + ": ref is on " + ref.device().str() + " but test is on " +
                     test.device().str());
  }
  if (ref.numel() == 0) {
    throw ShapeError(std::string(fn) + ": inputs are empty (shape " + ShapeString(ref) + ")");
  }
  torch::Tensor r = ref.to(torch::kDouble);
  torch::Tensor t = test.to(torch::kDouble);
  if (!torch::isfinite(r).all().item<bool>()) {
    throw ShapeError(std::string(fn) + ": ref contains NaN or Inf");
  }
  if (!torch::isfinite(t).all().item<bool>()) {
    throw ShapeError(std::string(fn) + ": test contains NaN or Inf");
  }
  return {r, t};
}

void CheckDataRange(const char* fn, double data_range) {
  if (!std::isfinite(data_range) || data_range <= 0) {
    throw InputError(std::string(fn) + ": data_range must be finite and > 0, got " +
                     std::to_string(data_range));
  }
}

void CheckFrameSize(const char* fn, const torch::Tensor& t) {
  const int64_t h = t.size(-2), w = t.size(-1);
  if (h < kSsimWindow || w < kSsimWindow) {
    throw ShapeError(std::string(fn) + ": frames are " + std::to_string(h) + "x" +
                     std::to_string(w) + " pixels; SSIM needs at least " +
                     std::to_string(kSsimWindow) + "x" + std::to_string(kSsimWindow) +
                     " (the Gaussian window)");
  }
}

double PsnrFromMse(double mse, double data_range) {
  if (mse <= 0) return kPsnrCap;
  return std::min(kPsnrCap, 10.0 * std::log10(data_range * data_range / mse));
}

// Normalised 1-D Gaussian taps of the SSIM window.
std::vector<double> GaussianTaps() {
  std::vector<double> taps(kSsimWindow);
  double sum = 0;
  for (int64_t i = 0; i < kSsimWindow; ++i) {
    const double x = static_cast<double>(i - kSsimRadius);
    taps[i] = std::exp(-0.5 * x * x / (kSsimSigma * kSsimSigma));
    sum += taps[i];
  }
  for (double& v : taps) v /= sum;
  return taps;
}

// Correlates `z` with `taps` along `dim`, keeping only outputs whose window lies inside z
// ('valid'). Eleven shifted multiply-adds run several times faster than a float64 conv2d on CPU.
torch::Tensor FilterValid(const torch::Tensor& z, const std::vector<double>& taps, int64_t dim) {
  const int64_t out = z.size(dim) - kSsimWindow + 1;
  torch::Tensor acc = z.narrow(dim, 0, out) * taps[0];
  for (int64_t i = 1; i < kSsimWindow; ++i) acc.add_(z.narrow(dim, i, out), taps[i]);
  return acc;
}

// Mean SSIM of each image of x, y: [N, H, W] float64 -> [N]. Local statistics use the separable
// Gaussian window. scikit-image filters with reflected borders and then drops kSsimRadius pixels
// at each edge before the mean; the window of every pixel it keeps lies inside the image, so the
// border mode never reaches the result and a 'valid' filter gives the kept pixels exactly.
torch::Tensor SsimPerImage(const torch::Tensor& x, const torch::Tensor& y, double data_range) {
  const int64_t n = x.size(0);
  const std::vector<double> taps = GaussianTaps();
  // One batched filter serves all five local moments.
  const torch::Tensor moments = torch::cat({x, y, x * x, y * y, x * y}, 0);
  const torch::Tensor filtered = FilterValid(FilterValid(moments, taps, 1), taps, 2);
  const std::vector<torch::Tensor> m = filtered.split(n, 0);
  const torch::Tensor& ux = m[0];
  const torch::Tensor& uy = m[1];
  // Population (not sample) covariances, as in Wang et al. 2004.
  const torch::Tensor vx = m[2] - ux * ux;
  const torch::Tensor vy = m[3] - uy * uy;
  const torch::Tensor vxy = m[4] - ux * uy;
  const double c1 = (kSsimK1 * data_range) * (kSsimK1 * data_range);
  const double c2 = (kSsimK2 * data_range) * (kSsimK2 * data_range);
  const torch::Tensor s = ((2 * ux * uy + c1) * (2 * vxy + c2)) /
                          ((ux * ux + uy * uy + c1) * (vx + vy + c2));
  return s.mean({1, 2});
}

// Errors of each row of [G, M] float64 matrices.
std::vector<AttentionError> RowErrors(const torch::Tensor& ref, const torch::Tensor& test) {
  const torch::Tensor diff = test - ref;
  const torch::Tensor stats = torch::stack({(ref * ref).sum(1), (test * test).sum(1),
                                            (ref * test).sum(1), (diff * diff).sum(1),
                                            diff.abs().amax(1)},
                                           1)
                                  .cpu()
                                  .contiguous();
  const auto a = stats.accessor<double, 2>();
  std::vector<AttentionError> out(static_cast<size_t>(stats.size(0)));
  for (int64_t g = 0; g < stats.size(0); ++g) {
    const double ref_sq = a[g][0], test_sq = a[g][1], dot = a[g][2], diff_sq = a[g][3];
    AttentionError& e = out[static_cast<size_t>(g)];
    if (ref_sq > 0) {
      e.rel_l2 = std::sqrt(diff_sq / ref_sq);
    } else {
      e.rel_l2 = diff_sq > 0 ? std::numeric_limits<double>::infinity() : 0.0;
    }
    if (ref_sq > 0 && test_sq > 0) {
      // Rounding can push |cos| a hair past 1 for parallel vectors; the value is a cosine.
      e.cosine = std::clamp(dot / (std::sqrt(ref_sq) * std::sqrt(test_sq)), -1.0, 1.0);
    } else {
      e.cosine = (ref_sq == 0 && test_sq == 0) ? 1.0 : 0.0;
    }
    e.max_abs = a[g][4];
  }
  return out;
}

}  // namespace

double Psnr(const torch::Tensor& ref, const torch::Tensor& test, double data_range) {
  torch::NoGradGuard no_grad;
  CheckDataRange("Psnr", data_range);
  const auto [r, t] = CheckedPair("Psnr", ref, test, -1, "");
  return PsnrFromMse((t - r).square().mean().item<double>(), data_range);
}

double Ssim(const torch::Tensor& ref, const torch::Tensor& test, double data_range) {
  torch::NoGradGuard no_grad;
  CheckDataRange("Ssim", data_range);
  const auto [r, t] = CheckedPair("Ssim", ref, test, 3, "a frame [C, H, W]");
  CheckFrameSize("Ssim", r);
  return SsimPerImage(r, t, data_range).mean().item<double>();
}

VideoQuality CompareVideos(const torch::Tensor& ref, const torch::Tensor& test, double data_range) {
  torch::NoGradGuard no_grad;
  CheckDataRange("CompareVideos", data_range);
  const auto [r, t] = CheckedPair("CompareVideos", ref, test, 4, "a video [T, C, H, W]");
  CheckFrameSize("CompareVideos", r);
  VideoQuality q;
  const int64_t frames = r.size(0);
  const torch::Tensor mse = (t - r).square().mean({1, 2, 3}).cpu().contiguous();
  const auto mse_of = mse.accessor<double, 1>();
  // One frame at a time bounds the temporary memory to five filtered copies of a single frame.
  for (int64_t f = 0; f < frames; ++f) {
    q.frame_psnr.push_back(PsnrFromMse(mse_of[f], data_range));
    q.frame_ssim.push_back(SsimPerImage(r[f], t[f], data_range).mean().item<double>());
  }
  double psnr_sum = 0, ssim_sum = 0;
  for (int64_t f = 0; f < frames; ++f) {
    psnr_sum += q.frame_psnr[static_cast<size_t>(f)];
    ssim_sum += q.frame_ssim[static_cast<size_t>(f)];
  }
  q.psnr = psnr_sum / static_cast<double>(frames);
  q.ssim = ssim_sum / static_cast<double>(frames);
  return q;
}

AttentionError CompareAttention(const torch::Tensor& ref, const torch::Tensor& test) {
  torch::NoGradGuard no_grad;
  const auto [r, t] = CheckedPair("CompareAttention", ref, test, -1, "");
  return RowErrors(r.reshape({1, -1}), t.reshape({1, -1}))[0];
}

std::vector<AttentionError> CompareAttentionPerHead(const torch::Tensor& ref,
                                                    const torch::Tensor& test) {
  torch::NoGradGuard no_grad;
  const auto [r, t] =
      CheckedPair("CompareAttentionPerHead", ref, test, 4, "attention outputs [B, H, N, D]");
  const int64_t heads = r.size(1);
  return RowErrors(r.transpose(0, 1).reshape({heads, -1}), t.transpose(0, 1).reshape({heads, -1}));
}

}  // namespace sparsetune
