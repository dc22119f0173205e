#include "evaluators/tiny_vdit.h"

#include <cmath>
#include <map>
#include <set>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>

#include "core/error.h"
#include "datasets/tensor_io.h"

namespace sparsetune {

namespace {

std::string Shape(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

// Rows of x [B, N, C] at idx [B, k].
torch::Tensor GatherTokens(const torch::Tensor& x, const torch::Tensor& idx) {
  return x.gather(1, idx.unsqueeze(-1).expand({idx.size(0), idx.size(1), x.size(2)}));
}

torch::Tensor LayerNorm(const torch::Tensor& x) {
  return torch::layer_norm(x, {x.size(-1)}, {}, {}, 1e-6);
}

torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight) {
  return x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-6) * weight;
}

// Sinusoidal embedding of t * 1000 (DiT's timestep scale) into `dim` channels.
torch::Tensor TimestepEmbedding(const torch::Tensor& t, int64_t dim) {
  const int64_t half = dim / 2;
  const torch::Tensor freqs =
      torch::exp(-std::log(10000.0) *
                 torch::arange(half, t.options().dtype(torch::kFloat32)) / half);
  const torch::Tensor args = (t.to(torch::kFloat32) * 1000.0).unsqueeze(1) * freqs.unsqueeze(0);
  return torch::cat({torch::cos(args), torch::sin(args)}, 1).to(t.scalar_type());
}

}  // namespace

ModelGeometry TinyVditConfig::geometry() const {
  ModelGeometry g;
  g.name = name;
  g.layers = layers;
  g.heads = heads;
  g.head_dim = head_dim;
  g.grid = {frames, height / patch, width / patch};
  g.text_tokens = text_tokens;
  g.text_position = text_tokens > 0 ? TextPosition::kFront : TextPosition::kNone;
  g.steps = steps;
  g.rope_split = RopeSplitFor(head_dim);
  return g;
}

void TinyVditConfig::validate() const {
  auto fail = [&](const std::string& field, const std::string& what) {
    throw InputError("tiny-vdit '" + name + "': field '" + field + "': " + what);
  };
  if (frames < 1) fail("frames", "must be >= 1");
  if (patch < 1) fail("patch", "must be >= 1");
  if (height < patch || height % patch != 0) fail("height", "must be a multiple of the patch");
  if (width < patch || width % patch != 0) fail("width", "must be a multiple of the patch");
  if (layers < 1) fail("layers", "must be >= 1");
  if (heads < 1) fail("heads", "must be >= 1");
  if (head_dim < 6 || head_dim % 2 != 0) fail("head_dim", "must be even and >= 6 (3D RoPE)");
  for (int64_t c : RopeSplitFor(head_dim)) {
    if (c % 2 != 0) fail("head_dim", "RoPE split must give even channel groups");
  }
  if (hidden() % 2 != 0) fail("heads", "hidden size must be even");
  if (mlp_ratio < 1) fail("mlp_ratio", "must be >= 1");
  if (steps < 1) fail("steps", "must be >= 1");
  if (text_tokens < 0) fail("text_tokens", "must be >= 0");
  if (classes < 1) fail("classes", "must be >= 1");
}

TinyVditConfig TinyVditConfig::Preset(const std::string& preset) {
  TinyVditConfig c;
  if (preset == "cpu-tiny") return c;
  if (preset == "gpu-small") {
    c.name = "tiny-vdit/gpu-small";
    c.frames = 16;
    c.height = 64;
    c.width = 64;
    c.patch = 2;
    // 16,384 video tokens at head_dim 64 as a real video DiT's attention, but few and narrow
    // layers: the trained weights ship in the repository (fp16 at most ~8 MB, here 6.6 MB) and
    // train in minutes on one GPU; docs/training.md.
    c.layers = 6;
    c.heads = 3;
    c.head_dim = 64;
    c.mlp_ratio = 2;
    c.steps = 30;
    c.text_tokens = 8;
    c.classes = 8;
    return c;
  }
  throw InputError("tiny-vdit: unknown preset '" + preset + "' (cpu-tiny, gpu-small)");
}

std::pair<torch::Tensor, torch::Tensor> RopeTables(const ModelGeometry& g, double theta) {
  const int64_t pairs = g.head_dim / 2;
  const int64_t nv = g.video_tokens();
  // Position of every video token along each axis, raster (frame, row, column) order.
  const torch::Tensor index = torch::arange(nv, torch::kInt64);
  const int64_t hw = g.grid[1] * g.grid[2];
  const std::array<torch::Tensor, 3> pos = {index.div(hw, "floor"),
                                            index.remainder(hw).div(g.grid[2], "floor"),
                                            index.remainder(g.grid[2])};
  std::vector<torch::Tensor> angles;
  for (int axis = 0; axis < 3; ++axis) {
    const int64_t group_pairs = g.rope_split[static_cast<size_t>(axis)] / 2;
    if (group_pairs == 0) continue;
    const torch::Tensor freqs =
        torch::pow(theta, -torch::arange(group_pairs, torch::kFloat64) / group_pairs);
    angles.push_back(pos[static_cast<size_t>(axis)].to(torch::kFloat64).unsqueeze(1) *
                     freqs.unsqueeze(0));
  }
  torch::Tensor video = torch::cat(angles, 1);  // [Nv, D/2]
  if (video.size(1) != pairs) {
    throw InputError("model '" + g.name + "': rope_split does not sum to head_dim " +
                     std::to_string(g.head_dim));
  }
  const torch::Tensor text = torch::zeros({g.text_tokens, pairs}, torch::kFloat64);
  torch::Tensor all = video;
  if (g.text_position == TextPosition::kFront) all = torch::cat({text, video}, 0);
  if (g.text_position == TextPosition::kBack) all = torch::cat({video, text}, 0);
  return {torch::cos(all).to(torch::kFloat32), torch::sin(all).to(torch::kFloat32)};
}

torch::Tensor ApplyRope(const torch::Tensor& x, const torch::Tensor& cos,
                        const torch::Tensor& sin) {
  auto sizes = x.sizes().vec();
  sizes.back() /= 2;
  sizes.push_back(2);
  const torch::Tensor pairs = x.reshape(sizes);
  const torch::Tensor x0 = pairs.select(-1, 0);
  const torch::Tensor x1 = pairs.select(-1, 1);
  return torch::stack({x0 * cos - x1 * sin, x0 * sin + x1 * cos}, -1).flatten(-2);
}

TinyVditBlockImpl::TinyVditBlockImpl(int64_t hidden, int64_t heads, int64_t mlp_hidden)
    : heads_(heads) {
  modulation = register_module("modulation", torch::nn::Linear(hidden, 6 * hidden));
  q = register_module("q", torch::nn::Linear(hidden, hidden));
  k = register_module("k", torch::nn::Linear(hidden, hidden));
  v = register_module("v", torch::nn::Linear(hidden, hidden));
  out = register_module("out", torch::nn::Linear(hidden, hidden));
  q_norm = register_parameter("q_norm", torch::ones({hidden / heads}));
  k_norm = register_parameter("k_norm", torch::ones({hidden / heads}));
  fc1 = register_module("fc1", torch::nn::Linear(hidden, mlp_hidden));
  fc2 = register_module("fc2", torch::nn::Linear(mlp_hidden, hidden));
}

torch::Tensor TinyVditBlockImpl::forward(const torch::Tensor& x, const torch::Tensor& cond,
                                         const torch::Tensor& cos, const torch::Tensor& sin,
                                         Runtime* runtime, int64_t step, int64_t layer,
                                         const AttentionObserver* observer) {
  const int64_t batch = x.size(0);
  const int64_t c = x.size(2);
  const int64_t d = c / heads_;
  const std::vector<torch::Tensor> mod =
      modulation(torch::silu(cond)).unsqueeze(1).chunk(6, /*dim=*/2);
  const torch::Tensor& shift1 = mod[0];
  const torch::Tensor& scale1 = mod[1];
  const torch::Tensor& gate1 = mod[2];
  const torch::Tensor& shift2 = mod[3];
  const torch::Tensor& scale2 = mod[4];
  const torch::Tensor& gate2 = mod[5];

  // Astraea: keys and values come from every token; everything per query token after that is
  // computed only for the selected tokens, and the runtime fills in the others' cached updates.
  TokenSelection sel;
  sel.tokens = x.size(1);
  if (runtime != nullptr) sel = runtime->select_tokens(step, layer, batch);
  const torch::Tensor h = LayerNorm(x) * (1 + scale1) + shift1;
  auto split_heads = [&](const torch::Tensor& t) {
    return t.view({batch, t.size(1), heads_, d}).transpose(1, 2);
  };
  const torch::Tensor kk = ApplyRope(RmsNorm(split_heads(k(h)), k_norm), cos, sin);
  const torch::Tensor vv = split_heads(v(h));

  torch::Tensor x_sel = x;
  torch::Tensor h_sel = h;
  torch::Tensor cos_sel = cos;
  torch::Tensor sin_sel = sin;
  if (!sel.all()) {
    x_sel = GatherTokens(x, sel.index);
    h_sel = GatherTokens(h, sel.index);
    const torch::Tensor flat = sel.index.reshape({-1});
    cos_sel = cos.index_select(0, flat).view({batch, 1, sel.count(), d / 2});
    sin_sel = sin.index_select(0, flat).view({batch, 1, sel.count(), d / 2});
  }
  const torch::Tensor qq = ApplyRope(RmsNorm(split_heads(q(h_sel)), q_norm), cos_sel, sin_sel);
  if (observer != nullptr) (*observer)(step, layer, qq, kk, vv);

  const torch::Tensor o = runtime != nullptr
                              ? runtime->attention(qq, kk, vv, step, layer, &sel)
                              : at::scaled_dot_product_attention(qq, kk, vv);
  const torch::Tensor attn = gate1 * out(o.transpose(1, 2).reshape({batch, sel.count(), c}));
  const torch::Tensor x1 = x_sel + attn;
  const torch::Tensor mlp =
      gate2 * fc2(torch::gelu(fc1(LayerNorm(x1) * (1 + scale2) + shift2)));
  if (runtime == nullptr) return x + attn + mlp;
  return x + runtime->complete_update(step, layer, sel, attn + mlp);
}

TinyVditImpl::TinyVditImpl(const TinyVditConfig& config, uint64_t init_seed) : config_(config) {
  config_.validate();
  const int64_t hidden = config_.hidden();
  const int64_t patch_dim = 3 * config_.patch * config_.patch;
  // Seeded init that leaves the global generator as it was, so building a model never changes
  // what runs after it. (Not locked: the initialisers below lock the generator themselves.)
  at::Generator global = at::detail::getDefaultCPUGenerator();
  const torch::Tensor saved_state = global.get_state();
  global.set_current_seed(init_seed);
  patch_embed = register_module("patch_embed", torch::nn::Linear(patch_dim, hidden));
  time_fc1 = register_module("time_fc1", torch::nn::Linear(hidden, hidden));
  time_fc2 = register_module("time_fc2", torch::nn::Linear(hidden, hidden));
  class_embed = register_module("class_embed", torch::nn::Embedding(config_.classes, hidden));
  prompt = register_parameter(
      "prompt", torch::randn({config_.classes, config_.text_tokens, hidden}) * 0.5);
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int64_t i = 0; i < config_.layers; ++i) {
    blocks->push_back(TinyVditBlock(hidden, config_.heads, config_.mlp_ratio * hidden));
  }
  final_modulation = register_module("final_modulation", torch::nn::Linear(hidden, 2 * hidden));
  final_proj = register_module("final_proj", torch::nn::Linear(hidden, patch_dim));
  global.set_state(saved_state);

  auto [cos, sin] = RopeTables(config_.geometry(), config_.rope_theta);
  rope_cos_ = register_buffer("rope_cos", cos);
  rope_sin_ = register_buffer("rope_sin", sin);
}

void TinyVditImpl::ZeroInitGates() {
  torch::NoGradGuard no_grad;
  for (const auto& module : *blocks) {
    auto block = module->as<TinyVditBlockImpl>();
    block->modulation->weight.zero_();
    block->modulation->bias.zero_();
  }
  final_modulation->weight.zero_();
  final_modulation->bias.zero_();
  final_proj->weight.zero_();
  final_proj->bias.zero_();
}

torch::Tensor TinyVditImpl::Patchify(const torch::Tensor& video) const {
  const int64_t b = video.size(0);
  const int64_t p = config_.patch;
  const int64_t gh = config_.height / p;
  const int64_t gw = config_.width / p;
  // [B, 3, T, gh, p, gw, p] -> [B, T, gh, gw, 3, p, p]
  return video.view({b, 3, config_.frames, gh, p, gw, p})
      .permute({0, 2, 3, 5, 1, 4, 6})
      .reshape({b, config_.frames * gh * gw, 3 * p * p});
}

torch::Tensor TinyVditImpl::Unpatchify(const torch::Tensor& tokens) const {
  const int64_t b = tokens.size(0);
  const int64_t p = config_.patch;
  const int64_t gh = config_.height / p;
  const int64_t gw = config_.width / p;
  return tokens.view({b, config_.frames, gh, gw, 3, p, p})
      .permute({0, 4, 1, 2, 5, 3, 6})
      .reshape({b, 3, config_.frames, config_.height, config_.width});
}

torch::Tensor TinyVditImpl::forward(const torch::Tensor& x, const torch::Tensor& t,
                                    const torch::Tensor& labels, Runtime& runtime, int64_t step,
                                    const AttentionObserver* observer) {
  return Run(x, t, labels, &runtime, step, observer);
}

torch::Tensor TinyVditImpl::velocity(const torch::Tensor& x, const torch::Tensor& t,
                                     const torch::Tensor& labels) {
  return Run(x, t, labels, nullptr, 0, nullptr);
}

torch::Tensor TinyVditImpl::Run(const torch::Tensor& x, const torch::Tensor& t,
                                const torch::Tensor& labels, Runtime* runtime, int64_t step,
                                const AttentionObserver* observer) {
  const TinyVditConfig& c = config_;
  if (x.dim() != 5 || x.size(1) != 3 || x.size(2) != c.frames || x.size(3) != c.height ||
      x.size(4) != c.width) {
    throw ShapeError("tiny-vdit '" + c.name + "': input must be [B, 3, " +
                     std::to_string(c.frames) + ", " + std::to_string(c.height) + ", " +
                     std::to_string(c.width) + "]; got " + Shape(x));
  }
  const torch::Tensor cond =
      time_fc2(torch::silu(time_fc1(TimestepEmbedding(t, c.hidden())))) + class_embed(labels);
  torch::Tensor tokens = patch_embed(Patchify(x));
  if (c.text_tokens > 0) tokens = torch::cat({prompt.index_select(0, labels), tokens}, 1);
  for (int64_t layer = 0; layer < c.layers; ++layer) {
    tokens = blocks[static_cast<size_t>(layer)]->as<TinyVditBlockImpl>()->forward(
        tokens, cond, rope_cos_, rope_sin_, runtime, step, layer, observer);
  }
  const std::vector<torch::Tensor> mod = final_modulation(torch::silu(cond)).unsqueeze(1).chunk(2, 2);
  torch::Tensor video = tokens.narrow(1, c.text_tokens, tokens.size(1) - c.text_tokens);
  video = final_proj(LayerNorm(video) * (1 + mod[1]) + mod[0]);
  return Unpatchify(video);
}

void TinyVditImpl::LoadWeights(const std::filesystem::path& path) {
  const std::map<std::string, torch::Tensor> loaded = LoadTensors(path);
  const std::string file = path.string();
  torch::NoGradGuard no_grad;
  std::set<std::string> used;
  for (auto& item : named_parameters(/*recurse=*/true)) {
    auto it = loaded.find(item.key());
    if (it == loaded.end()) {
      throw InputError(file + ": tensor '" + item.key() + "' is missing (model '" + config_.name +
                       "')");
    }
    if (it->second.sizes() != item.value().sizes()) {
      throw InputError(file + ": tensor '" + item.key() + "' has shape " + Shape(it->second) +
                       ", the model '" + config_.name + "' expects " + Shape(item.value()));
    }
    if (!it->second.is_floating_point()) {
      throw InputError(file + ": tensor '" + item.key() + "' must be floating point");
    }
    item.value().copy_(it->second.to(item.value().options()));
    used.insert(item.key());
  }
  for (const auto& [name, tensor] : loaded) {
    if (used.count(name) == 0) {
      throw InputError(file + ": tensor '" + name + "' is not a parameter of model '" +
                       config_.name + "'");
    }
  }
}

void TinyVditImpl::SaveWeights(const std::filesystem::path& path, torch::Dtype dtype,
                               const std::map<std::string, std::string>& extra_metadata) const {
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    tensors[item.key()] = item.value().detach().to(torch::kCPU, dtype).contiguous();
  }
  const TinyVditConfig& c = config_;
  std::map<std::string, std::string> metadata = {
      {"format", "sparsetune.tiny-vdit"},
      {"model", c.name},
      {"frames", std::to_string(c.frames)},
      {"height", std::to_string(c.height)},
      {"width", std::to_string(c.width)},
      {"patch", std::to_string(c.patch)},
      {"layers", std::to_string(c.layers)},
      {"heads", std::to_string(c.heads)},
      {"head_dim", std::to_string(c.head_dim)},
      {"text_tokens", std::to_string(c.text_tokens)},
      {"classes", std::to_string(c.classes)}};
  for (const auto& [key, value] : extra_metadata) metadata[key] = value;
  SaveTensors(path, tensors, metadata);
}

torch::Tensor SampleVideo(TinyVdit& model, const SampleRequest& request, Runtime& runtime,
                          const AttentionObserver* observer) {
  const TinyVditConfig& c = model->config();
  if (request.class_id < 0 || request.class_id >= c.classes) {
    throw InputError("tiny-vdit '" + c.name + "': class " + std::to_string(request.class_id) +
                     " out of range [0, " + std::to_string(c.classes) + ")");
  }
  torch::NoGradGuard no_grad;
  runtime.reset();
  const torch::TensorOptions options = model->patch_embed->weight.options();
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(request.seed);
  // The noise is drawn on the CPU generator and then moved, so a seed gives the same noise on
  // every device. The sampler state stays float32 (bf16/fp16 models included): rounding the
  // latent to 16 bits every step would add error that is not the model's.
  torch::Tensor x = torch::randn({1, 3, c.frames, c.height, c.width}, gen,
                                 torch::TensorOptions().dtype(torch::kFloat32))
                        .to(options.device());
  const torch::Tensor labels =
      torch::full({1}, request.class_id, options.dtype(torch::kInt64));
  for (int64_t step = 0; step < c.steps; ++step) {
    const double t = 1.0 - static_cast<double>(step) / static_cast<double>(c.steps);
    const double t_next = 1.0 - static_cast<double>(step + 1) / static_cast<double>(c.steps);
    const torch::Tensor tt = torch::full({1}, t, options);
    const torch::Tensor velocity =
        model->forward(x.to(options.dtype()), tt, labels, runtime, step, observer);
    x = x + (t_next - t) * velocity.to(torch::kFloat32);
  }
  return ((x.clamp(-1.0, 1.0) + 1.0) * 0.5).to(torch::kFloat32);
}

}  // namespace sparsetune
