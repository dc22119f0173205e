// Output quality of a sparse schedule against the dense baseline: PSNR and SSIM of decoded video
// frames, and error measures of attention outputs. Definitions, the 100 dB cap and the
// scikit-image parameters matched: docs/metrics.md.
//
//   VideoQuality q = CompareVideos(dense_video, sparse_video);     // [T, C, H, W] in [0, 1]
//   AttentionError e = CompareAttention(dense_out, sparse_out);    // any shape, same for both
//
// Every function computes in float64 on the inputs' device, accepts any real floating or integer
// dtype, and throws ShapeError for an undefined/empty tensor, a shape or device mismatch, a wrong
// rank, a frame smaller than the SSIM window, or a NaN/Inf value; InputError for a bad data range.
// All functions are pure and thread-safe.
#pragma once

#include <cstdint>
#include <vector>

#include <torch/torch.h>

namespace sparsetune {

// PSNR reported for identical inputs (MSE 0) and upper bound of every PSNR, in dB. Keeps JSON
// output finite and averages meaningful when some frames are unchanged.
constexpr double kPsnrCap = 100.0;

// SSIM constants of Wang et al. 2004 (and scikit-image's defaults).
constexpr double kSsimK1 = 0.01;
constexpr double kSsimK2 = 0.03;
constexpr double kSsimSigma = 1.5;  // Gaussian window standard deviation, pixels
// Window half-width in pixels: int(3.5 * sigma + 0.5), scikit-image's truncation of the Gaussian.
constexpr int64_t kSsimRadius = 5;
// Window side, 11 pixels: also the smallest frame height and width SSIM accepts.
constexpr int64_t kSsimWindow = 2 * kSsimRadius + 1;

// min(10 log10(data_range^2 / MSE), kPsnrCap) over all elements of `ref` and `test` (any equal
// shape). `data_range`: max - min of the value range, 1 for frames in [0, 1].
double Psnr(const torch::Tensor& ref, const torch::Tensor& test, double data_range = 1.0);

// Mean SSIM of one frame [C, H, W] (H, W >= kSsimWindow): each channel scored on its own, then
// averaged over channels, as scikit-image's structural_similarity with channel_axis does.
double Ssim(const torch::Tensor& ref, const torch::Tensor& test, double data_range = 1.0);

// Quality of a video against its reference.
struct VideoQuality {
  double psnr = 0;                 // dB, mean of frame_psnr (each capped at kPsnrCap)
  double ssim = 0;                 // mean of frame_ssim
  std::vector<double> frame_psnr;  // dB, one per frame
  std::vector<double> frame_ssim;  // one per frame
};

// Per-frame PSNR and SSIM of videos [T, C, H, W] and their means over frames.
VideoQuality CompareVideos(const torch::Tensor& ref, const torch::Tensor& test,
                           double data_range = 1.0);

// Deviation of an attention output from its reference.
struct AttentionError {
  double rel_l2 = 0;   // ||test - ref||_2 / ||ref||_2 (0 when both are zero, +inf when only ref is)
  double cosine = 1;   // <ref, test> / (||ref|| ||test||) (1 when both are zero, 0 when one is)
  double max_abs = 0;  // max |test - ref|, in the inputs' units
};

// Errors over all elements of two tensors of the same (any) shape.
AttentionError CompareAttention(const torch::Tensor& ref, const torch::Tensor& test);

// Errors per head of attention outputs [B, H, N, D] (reduced over batch, tokens and channels);
// one entry per head.
std::vector<AttentionError> CompareAttentionPerHead(const torch::Tensor& ref,
                                                    const torch::Tensor& test);

}  // namespace sparsetune
