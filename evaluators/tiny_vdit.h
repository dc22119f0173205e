// tiny-vdit: a small but complete video diffusion transformer in libtorch, and its sampler.
//
//   video [B, 3, T, H, W] in [-1, 1]
//     -> patch embedding (patch [1, p, p], a linear map of each patch)   [B, Nv, C]
//     -> learned prompt tokens of the class in front of the video          [B, Np + Nv, C]
//     -> L adaLN-Zero blocks, conditioned on timestep + class:
//          joint self-attention (3D RoPE on video q/k, text unrotated, q/k RMS norm)
//          through the Runtime with its (step, layer), then an MLP;
//          Astraea: only the tokens the runtime selects are computed after k/v
//     -> final adaLN + linear, unpatchify                                  velocity [B, 3, T, H, W]
//
// The sampler integrates the rectified-flow ODE x_t = (1 - t) x_0 + t e with Euler steps from
// pure noise (t = 1) to t = 0; noise comes from a CPU generator seeded by the sample's seed, so a
// sample never depends on what ran before it. Architecture and presets: docs/workloads.md.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>

#include <torch/torch.h>

#include "kernels/runtime.h"
#include "kernels/schedule.h"

namespace sparsetune {

// Size of a tiny-vdit model and of the videos it makes.
struct TinyVditConfig {
  std::string name = "tiny-vdit/cpu-tiny";  // model name written into schedules
  int64_t frames = 8;         // video frames T (temporal patch is 1)
  int64_t height = 32;        // pixels
  int64_t width = 32;         // pixels
  int64_t patch = 4;          // spatial patch size p (grid = [T, H/p, W/p])
  int64_t layers = 6;         // DiT blocks
  int64_t heads = 4;          // attention heads
  int64_t head_dim = 32;      // channels per head (hidden = heads * head_dim)
  int64_t mlp_ratio = 4;      // MLP hidden = mlp_ratio * hidden
  int64_t steps = 16;         // sampler steps
  int64_t text_tokens = 4;    // learned prompt tokens per class, in front of the video
  int64_t classes = 8;        // class labels
  double rope_theta = 10000;  // RoPE base

  int64_t hidden() const { return heads * head_dim; }
  // The attention geometry (schedule-v1 "model"); RoPE split from RopeSplitFor(head_dim).
  ModelGeometry geometry() const;
  // Throws InputError naming the field when the sizes do not fit together.
  void validate() const;

  // "cpu-tiny" or "gpu-small"; InputError for any other name.
  static TinyVditConfig Preset(const std::string& preset);
};

// Called with the q, k, v ([B, H, N, D], after RoPE) of every attention call of a dense run.
using AttentionObserver = std::function<void(int64_t step, int64_t layer, const torch::Tensor& q,
                                             const torch::Tensor& k, const torch::Tensor& v)>;

// One adaLN-Zero DiT block.
class TinyVditBlockImpl : public torch::nn::Module {
 public:
  TinyVditBlockImpl(int64_t hidden, int64_t heads, int64_t mlp_hidden);

  // x [B, N, C], cond [B, C], rope cos/sin [N, D/2]. Returns the new x. Without a runtime
  // (nullptr) every token is computed and attention is libtorch's dense, differentiable SDPA.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cond,
                        const torch::Tensor& cos, const torch::Tensor& sin, Runtime* runtime,
                        int64_t step, int64_t layer, const AttentionObserver* observer);

  torch::nn::Linear modulation{nullptr};  // SiLU(cond) -> 6 x hidden (shift, scale, gate x2)
  torch::nn::Linear q{nullptr}, k{nullptr}, v{nullptr}, out{nullptr};
  torch::Tensor q_norm, k_norm;           // RMS-norm weights [D] of q and k
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};

 private:
  int64_t heads_;
};
TORCH_MODULE(TinyVditBlock);

class TinyVditImpl : public torch::nn::Module {
 public:
  // Parameters are initialised from `init_seed` (torch's default init, so every branch of a
  // random model contributes; ZeroInitGates() gives the adaLN-Zero start for training).
  TinyVditImpl(const TinyVditConfig& config, uint64_t init_seed);

  const TinyVditConfig& config() const { return config_; }

  // Velocity prediction. x [B, 3, T, H, W], t [B] in [0, 1], labels [B] int64.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t,
                        const torch::Tensor& labels, Runtime& runtime, int64_t step,
                        const AttentionObserver* observer = nullptr);
  // Velocity prediction for training: the same network with dense attention straight through
  // libtorch's SDPA (differentiable, autocast-aware), never through a Runtime.
  torch::Tensor velocity(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& labels);

  // Sets the adaLN gates and the output projection to zero (adaLN-Zero's start for training).
  void ZeroInitGates();

  // Loads every parameter from a safetensors file; InputError naming the file and the tensor
  // when one is missing, has the wrong shape, or the file holds an unknown tensor.
  void LoadWeights(const std::filesystem::path& path);
  // Writes every parameter as `dtype` (float32, or float16/bfloat16 to ship smaller files) with
  // the config and `extra_metadata` in the file's metadata.
  void SaveWeights(const std::filesystem::path& path, torch::Dtype dtype = torch::kFloat32,
                   const std::map<std::string, std::string>& extra_metadata = {}) const;

  // Video [B, 3, T, H, W] <-> tokens [B, Nv, 3 p p] in raster (frame, row, column) order.
  torch::Tensor Patchify(const torch::Tensor& video) const;
  torch::Tensor Unpatchify(const torch::Tensor& tokens) const;

  torch::nn::Linear patch_embed{nullptr};  // 3 p p -> hidden
  torch::nn::Linear time_fc1{nullptr}, time_fc2{nullptr};  // timestep embedding MLP
  torch::nn::Embedding class_embed{nullptr};
  torch::Tensor prompt;                    // [classes, text_tokens, hidden] learned prompt tokens
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::Linear final_modulation{nullptr};  // SiLU(cond) -> shift, scale
  torch::nn::Linear final_proj{nullptr};        // hidden -> 3 p p

 private:
  torch::Tensor Run(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& labels,
                    Runtime* runtime, int64_t step, const AttentionObserver* observer);

  TinyVditConfig config_;
  torch::Tensor rope_cos_, rope_sin_;  // [N, D/2] buffers; text rows are the identity rotation
};
TORCH_MODULE(TinyVdit);

// RoPE angle tables for the joint sequence of `geometry`: cos and sin [N, D/2], where the (t, h, w)
// channel groups of geometry.rope_split rotate by the token's frame, row and column and text
// tokens are not rotated.
std::pair<torch::Tensor, torch::Tensor> RopeTables(const ModelGeometry& geometry, double theta);
// Rotates x [B, H, N, D] (channel pairs (2i, 2i+1)) by cos/sin [N, D/2].
torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin);

// The rectified-flow Euler sampler: `steps` uniform steps of t from 1 to 0.
struct SampleRequest {
  int64_t class_id = 0;  // conditioning class
  uint64_t seed = 0;     // seed of the initial noise (CPU generator)
};

// Generates one video under `runtime` (runtime.reset() is called first). Returns [1, 3, T, H, W]
// in [0, 1]. `observer` sees every attention call's q, k, v.
torch::Tensor SampleVideo(TinyVdit& model, const SampleRequest& request, Runtime& runtime,
                          const AttentionObserver* observer = nullptr);

}  // namespace sparsetune
