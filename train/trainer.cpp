#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <iomanip>
#include <random>
#include <sstream>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/autocast_mode.h>
#include <torch/torch.h>

#include "core/build_info.h"
#include "core/error.h"
#include "core/json_reader.h"
#include "datasets/clips.h"
#include "datasets/tensor_io.h"
#include "evaluators/tiny_vdit.h"
#include "train/windows.h"

#ifdef SPARSETUNE_WITH_CUDA_RUNTIME
#include <cuda_runtime_api.h>
#endif

namespace sparsetune {

namespace {

using Clock = std::chrono::steady_clock;

constexpr double kValTimes[] = {0.1, 0.3, 0.5, 0.7, 0.9};
constexpr uint64_t kValSeedSalt = 0x5eed5a17ULL;

double Seconds(Clock::time_point since) {
  return std::chrono::duration<double>(Clock::now() - since).count();
}

// SplitMix64 of (seed, step): independent generator seeds per step, so a resumed run draws what
// the uninterrupted run would have drawn.
uint64_t StepSeed(uint64_t seed, int64_t step) {
  uint64_t z = seed * 0x9E3779B97F4A7C15ULL + static_cast<uint64_t>(step) + 1;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return (z ^ (z >> 31)) & ((uint64_t{1} << 62) - 1);
}

std::string DeviceName(const torch::Device& device) {
  if (!device.is_cuda()) return "cpu (" + std::to_string(torch::get_num_threads()) + " threads)";
#ifdef SPARSETUNE_WITH_CUDA_RUNTIME
  cudaDeviceProp prop{};
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
    return std::string(prop.name) + " (cuda:0, sm_" + std::to_string(prop.major) +
           std::to_string(prop.minor) + ")";
  }
#endif
  return "cuda:0";
}

std::string Fixed(double value, int digits) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(digits) << value;
  return s.str();
}

std::string Duration(double seconds) {
  const auto total = static_cast<int64_t>(std::max(0.0, seconds) + 0.5);
  std::ostringstream s;
  if (total >= 3600) s << total / 3600 << "h";
  if (total >= 60) s << (total % 3600) / 60 << "m";
  s << total % 60 << "s";
  return s.str();
}

// bf16 autocast on CUDA for the scope of a forward pass (and its loss), as torch.autocast does:
// the cast-weight cache is dropped when the outermost scope ends, so updated weights are recast.
class AutocastScope {
 public:
  explicit AutocastScope(bool on) : on_(on) {
    if (!on_) return;
    at::autocast::set_autocast_enabled(at::kCUDA, true);
    at::autocast::set_autocast_dtype(at::kCUDA, at::kBFloat16);
    at::autocast::increment_nesting();
  }
  ~AutocastScope() {
    if (!on_) return;
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(at::kCUDA, false);
  }
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool on_;
};

// The clips as one float tensor on the device, and where each clip's train and held-out frames are.
struct ClipData {
  struct Entry {
    std::string name;
    std::string source;
    int64_t class_id = 0;
    int64_t offset = 0;          // first frame in `frames`
    int64_t train_frames = 0;    // frames [offset, offset + train_frames) are trained on
    int64_t heldout_frames = 0;  // the rest of the clip is held out
  };
  std::vector<Entry> clips;
  std::vector<ClipSpan> spans;  // the training frames of `clips`, for RandomWindows
  torch::Tensor frames;  // [F, 3, H, W] in [-1, 1]
  int64_t height = 0, width = 0;
};

ClipData LoadClipData(const TrainConfig& config, const TinyVditConfig& model,
                      const torch::Device& device) {
  const std::vector<Clip> clips = LoadClips(config.clips);
  if (clips.empty()) throw InputError(config.clips.string() + ": no clips in index.json");
  ClipData data;
  std::vector<torch::Tensor> parts;
  int64_t offset = 0;
  for (const Clip& clip : clips) {
    const int64_t t = clip.frames.size(0);
    ClipData::Entry e;
    e.name = clip.name;
    e.source = clip.source;
    e.class_id = clip.class_id;
    e.offset = offset;
    e.heldout_frames = static_cast<int64_t>(std::ceil(static_cast<double>(t) * config.heldout_fraction));
    e.train_frames = t - e.heldout_frames;
    const std::string where = config.source.string() + ": clip '" + clip.name + "' (" +
                              std::to_string(t) + " frames)";
    if (clip.class_id >= model.classes) {
      throw InputError(where + ": class " + std::to_string(clip.class_id) +
                       " does not fit the preset's " + std::to_string(model.classes) + " classes");
    }
    if (e.heldout_frames < model.frames || e.train_frames < model.frames) {
      throw InputError(where + ": too short for " + std::to_string(model.frames) +
                       "-frame windows in both the training part and the held-out part "
                       "(field 'heldout_fraction')");
    }
    if (data.height == 0) {
      data.height = clip.frames.size(1);
      data.width = clip.frames.size(2);
    } else if (clip.frames.size(1) != data.height || clip.frames.size(2) != data.width) {
      throw InputError(where + ": all clips must have the same frame size");
    }
    parts.push_back(clip.frames.permute({0, 3, 1, 2}).to(torch::kFloat32) / 127.5 - 1.0);
    data.clips.push_back(e);
    data.spans.push_back({e.class_id, e.offset, e.train_frames});
    offset += t;
  }
  data.frames = torch::cat(parts, 0).to(device).contiguous();
  return data;
}

// Samples -> videos [B, 3, T, h, w] at the model's size, and labels [B]. Every frame is cropped,
// flipped and resized by its own affine map, all frames in one grid_sample.
std::pair<torch::Tensor, torch::Tensor> Assemble(const ClipData& data,
                                                 const std::vector<Window>& windows,
                                                 const TinyVditConfig& model,
                                                 const torch::Device& device) {
  const auto b = static_cast<int64_t>(windows.size());
  const int64_t t = model.frames;
  std::vector<int64_t> index, labels;
  std::vector<float> theta;
  for (const Window& w : windows) {
    labels.push_back(w.class_id);
    for (const FrameView& v : w.frames) {
      index.push_back(v.frame);
      const auto sx = static_cast<float>(v.flip ? -v.side : v.side);
      const std::vector<float> row = {sx, 0.0f, static_cast<float>(v.cx),
                                      0.0f, static_cast<float>(v.side), static_cast<float>(v.cy)};
      theta.insert(theta.end(), row.begin(), row.end());
    }
  }
  const torch::Tensor idx = torch::tensor(index, torch::kInt64).to(device);
  const torch::Tensor th = torch::tensor(theta, torch::kFloat32).view({b * t, 2, 3}).to(device);
  const torch::Tensor src = data.frames.index_select(0, idx);  // [B T, 3, H, W]
  const torch::Tensor grid =
      torch::nn::functional::affine_grid(th, {b * t, 3, model.height, model.width}, false);
  const torch::Tensor out = torch::nn::functional::grid_sample(
      src, grid,
      torch::nn::functional::GridSampleFuncOptions().mode(torch::kBilinear).align_corners(false));
  const torch::Tensor video = out.view({b, t, 3, model.height, model.width}).permute({0, 2, 1, 3, 4});
  return {video.contiguous(), torch::tensor(labels, torch::kInt64).to(device)};
}

// Full-frame windows with evenly spaced starts in the held-out (or training) part of every clip.
std::vector<Window> FixedWindows(const ClipData& data, int64_t per_clip, const TinyVditConfig& model,
                                 bool heldout) {
  std::vector<Window> windows;
  for (const auto& clip : data.clips) {
    const int64_t first = clip.offset + (heldout ? clip.train_frames : 0);
    const int64_t room = (heldout ? clip.heldout_frames : clip.train_frames) - model.frames;
    for (int64_t i = 0; i < per_clip; ++i) {
      const int64_t start = per_clip == 1 ? room / 2 : (room * i) / (per_clip - 1);
      Window w;
      w.class_id = clip.class_id;
      for (int64_t f = 0; f < model.frames; ++f) {
        FrameView v;
        v.frame = first + start + f;
        w.frames.push_back(v);
      }
      windows.push_back(w);
    }
  }
  return windows;
}

// A fixed loss set: every window at every t of kValTimes with noise from a fixed seed.
struct LossSet {
  torch::Tensor x0, noise, t, labels;  // [M, 3, T, H, W], same, [M], [M]
};

LossSet MakeLossSet(const ClipData& data, const std::vector<Window>& windows,
                    const TinyVditConfig& model, const torch::Device& device, uint64_t seed) {
  auto [video, labels] = Assemble(data, windows, model, device);
  const int64_t m = video.size(0);
  const int64_t k = static_cast<int64_t>(std::size(kValTimes));
  LossSet set;
  set.x0 = video.repeat({k, 1, 1, 1, 1});
  set.labels = labels.repeat({k});
  set.t = torch::tensor(std::vector<double>(std::begin(kValTimes), std::end(kValTimes)),
                        torch::kFloat32)
              .repeat_interleave(m)
              .to(device);
  torch::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  set.noise = torch::randn(set.x0.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat32)).to(device);
  return set;
}

torch::Tensor Noised(const torch::Tensor& x0, const torch::Tensor& noise, const torch::Tensor& t) {
  const torch::Tensor tt = t.view({-1, 1, 1, 1, 1});
  return (1.0 - tt) * x0 + tt * noise;
}

double SetLoss(TinyVdit& model, const LossSet& set, int64_t batch, bool autocast) {
  torch::NoGradGuard no_grad;
  const int64_t m = set.x0.size(0);
  torch::Tensor total = torch::zeros({}, set.x0.options().dtype(torch::kFloat64));
  for (int64_t i = 0; i < m; i += batch) {
    const int64_t n = std::min(batch, m - i);
    const torch::Tensor x0 = set.x0.narrow(0, i, n);
    const torch::Tensor e = set.noise.narrow(0, i, n);
    const torch::Tensor t = set.t.narrow(0, i, n);
    torch::Tensor v;
    {
      AutocastScope scope(autocast);
      v = model->velocity(Noised(x0, e, t), t, set.labels.narrow(0, i, n));
    }
    total += (v.to(torch::kFloat32) - (e - x0)).pow(2).sum().to(torch::kFloat64);
  }
  return total.item<double>() / static_cast<double>(set.x0.numel());
}

double LearningRate(const TrainConfig& c, int64_t step, int64_t total) {
  if (step < c.warmup_steps) return c.lr * static_cast<double>(step + 1) / static_cast<double>(c.warmup_steps);
  const double span = static_cast<double>(std::max<int64_t>(1, total - c.warmup_steps));
  const double progress = std::min(1.0, static_cast<double>(step - c.warmup_steps) / span);
  return c.lr * (c.min_lr_ratio + (1.0 - c.min_lr_ratio) * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

// What a checkpoint keeps besides the weights and the optimizer.
struct RunState {
  int64_t step = 0;
  double untrained = 0, random_init = 0, train_loss = 0;
  std::vector<std::pair<int64_t, double>> history;
};

// The AdamW moments and step count of every parameter, by parameter name. (Written as
// safetensors rather than with torch::save: libtorch 2.11 crashes saving an optimizer a second
// time in one process.)
void SaveOptimizer(const std::filesystem::path& path, TinyVdit& model,
                   torch::optim::AdamW& optimizer,
                   const std::map<std::string, std::string>& metadata) {
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& item : model->named_parameters()) {
    const auto it = optimizer.state().find(item.value().unsafeGetTensorImpl());
    if (it == optimizer.state().end()) continue;
    const auto& s = static_cast<const torch::optim::AdamWParamState&>(*it->second);
    tensors["exp_avg." + item.key()] = s.exp_avg().to(torch::kCPU).contiguous();
    tensors["exp_avg_sq." + item.key()] = s.exp_avg_sq().to(torch::kCPU).contiguous();
    tensors["step." + item.key()] = torch::tensor({s.step()}, torch::kInt64);
  }
  SaveTensors(path, tensors, metadata);
}

void LoadOptimizer(const std::filesystem::path& path, TinyVdit& model,
                   torch::optim::AdamW& optimizer) {
  const std::map<std::string, torch::Tensor> tensors = LoadTensors(path);
  auto get = [&](const std::string& name, const torch::Tensor& like) {
    const auto it = tensors.find(name);
    if (it == tensors.end() || it->second.numel() != like.numel()) {
      throw InputError(path.string() + ": tensor '" + name + "' is missing or has the wrong size");
    }
    return it->second.to(like.options()).view(like.sizes()).clone();
  };
  for (const auto& item : model->named_parameters()) {
    if (tensors.count("step." + item.key()) == 0) continue;  // never stepped
    auto state = std::make_unique<torch::optim::AdamWParamState>();
    state->step(tensors.at("step." + item.key()).item<int64_t>());
    state->exp_avg(get("exp_avg." + item.key(), item.value()));
    state->exp_avg_sq(get("exp_avg_sq." + item.key(), item.value()));
    optimizer.state()[item.value().unsafeGetTensorImpl()] = std::move(state);
  }
}

// Checkpoint files are replaced one by one, each atomically (temp file + rename), state.json last;
// each carries the step in its metadata, so a checkpoint cut between two files is detected when
// resuming. (No folder is removed or renamed: std::filesystem::remove_all on a non-empty folder
// crashed in this binary next to libtorch 2.11.)
void SaveCheckpoint(const std::filesystem::path& dir, const TrainConfig& config, TinyVdit& model,
                    TinyVdit& ema, torch::optim::AdamW& optimizer, const RunState& state) {
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) throw RunError(dir.string() + ": cannot create checkpoint folder: " + ec.message());
  const std::map<std::string, std::string> step = {{"checkpoint_step", std::to_string(state.step)}};
  model->SaveWeights(dir / "model.safetensors", torch::kFloat32, step);
  ema->SaveWeights(dir / "ema.safetensors", torch::kFloat32, step);
  SaveOptimizer(dir / "optimizer.safetensors", model, optimizer, step);
  Json history = Json::array();
  for (const auto& [s, l] : state.history) history.push_back({s, l});
  SaveJsonFile(dir / "state.json",
               Json{{"name", config.name}, {"preset", config.preset}, {"seed", config.seed},
                    {"step", state.step}, {"untrained_heldout_loss", state.untrained},
                    {"random_init_heldout_loss", state.random_init},
                    {"train_loss", state.train_loss}, {"heldout_history", history}});
}

// InputError unless the checkpoint file `name` was written at `step`.
void CheckCheckpointStep(const std::filesystem::path& dir, const std::string& name, int64_t step) {
  std::map<std::string, std::string> metadata;
  LoadTensors(dir / name, &metadata);
  const auto it = metadata.find("checkpoint_step");
  if (it == metadata.end() || it->second != std::to_string(step)) {
    throw InputError((dir / name).string() + ": not from step " + std::to_string(step) +
                     " of state.json (checkpoint cut while writing; restart without --resume)");
  }
}

RunState LoadCheckpoint(const std::filesystem::path& dir, const TrainConfig& config,
                        TinyVdit& model, TinyVdit& ema, torch::optim::AdamW& optimizer) {
  const std::filesystem::path state_file = dir / "state.json";
  if (!std::filesystem::exists(state_file)) {
    throw InputError(dir.string() + ": no checkpoint to resume (state.json missing)");
  }
  const Json doc = LoadJsonFile(state_file);
  JsonReader r(doc, state_file.string());
  const std::string name = r.string("name");
  const std::string preset = r.string("preset");
  const auto seed = static_cast<uint64_t>(r.integer("seed", 0, int64_t{1} << 53));
  if (name != config.name || preset != config.preset || seed != config.seed) {
    throw InputError(state_file.string() + ": checkpoint of run '" + name + "' (" + preset +
                     ", seed " + std::to_string(seed) + "), not of this config's '" + config.name +
                     "' (" + config.preset + ", seed " + std::to_string(config.seed) + ")");
  }
  RunState s;
  s.step = r.integer("step", 0, int64_t{1} << 30);
  s.untrained = r.number("untrained_heldout_loss");
  s.random_init = r.number("random_init_heldout_loss");
  s.train_loss = r.number("train_loss");
  for (const Json& item : r.raw("heldout_history")) {
    s.history.emplace_back(item.at(0).get<int64_t>(), item.at(1).get<double>());
  }
  r.finish();
  for (const char* name : {"model.safetensors", "ema.safetensors", "optimizer.safetensors"}) {
    CheckCheckpointStep(dir, name, s.step);
  }
  model->LoadWeights(dir / "model.safetensors");
  ema->LoadWeights(dir / "ema.safetensors");
  LoadOptimizer(dir / "optimizer.safetensors", model, optimizer);
  return s;
}

void WriteCard(const TrainConfig& config, const TrainOptions& options, const TinyVditConfig& model,
               const ClipData& data, int64_t params, const TrainResult& r) {
  const std::string weights_name = r.weights.filename().string();
  // A run cut by its time limit is reproduced by stopping at the same step instead.
  const std::string command =
      options.command +
      (r.time_limited ? " --time-limit 0 --stop-at " + std::to_string(r.steps) : std::string());
  const double mb = static_cast<double>(std::filesystem::file_size(r.weights)) / 1e6;
  Json clips = Json::array();
  for (const auto& c : data.clips) {
    clips.push_back({{"name", c.name}, {"class", c.class_id}, {"train_frames", c.train_frames},
                     {"heldout_frames", c.heldout_frames}, {"source", c.source}});
  }
  Json history = Json::array();
  for (const auto& [s, l] : r.heldout_history) history.push_back({s, l});
  const Json card = {
      {"format", "sparsetune.model-card/1"},
      {"name", config.name},
      {"model", model.name},
      {"preset", config.preset},
      {"weights", weights_name},
      {"weights_dtype", "float16"},
      {"weights_bytes", std::filesystem::file_size(r.weights)},
      {"parameters", params},
      {"geometry",
       {{"frames", model.frames}, {"height", model.height}, {"width", model.width},
        {"patch", model.patch}, {"layers", model.layers}, {"heads", model.heads},
        {"head_dim", model.head_dim}, {"mlp_ratio", model.mlp_ratio},
        {"text_tokens", model.text_tokens}, {"classes", model.classes},
        {"sampler_steps", model.steps}}},
      {"data", {{"clips", clips}, {"heldout_fraction", config.heldout_fraction}}},
      {"training",
       {{"steps", r.steps}, {"planned_steps", r.planned_steps}, {"time_limited", r.time_limited},
        {"batch", config.batch}, {"lr", config.lr}, {"warmup_steps", config.warmup_steps},
        {"weight_decay", config.weight_decay}, {"ema_decay", config.ema_decay},
        {"frame_strides", config.frame_strides}, {"image_fraction", config.image_fraction},
        {"pan_fraction", config.pan_fraction},
        {"seed", config.seed}, {"init_seed", config.init_seed}, {"device", r.device},
        {"bf16_autocast", config.bf16 && config.device == "cuda"},
        {"wall_s", r.wall_s}}},
      {"loss",
       {{"train_last_window", r.train_loss}, {"train_windows_ema", r.train_windows_loss},
        {"heldout_ema", r.heldout_loss}, {"heldout_untrained_start", r.untrained_heldout_loss},
        {"heldout_random_init", r.random_init_heldout_loss}, {"heldout_history", history}}},
      {"command", command},
      {"commit", GetBuildInfo().git_commit}};
  std::filesystem::path json_path = r.card;
  json_path.replace_extension(".json");
  SaveJsonFile(json_path, card);

  std::ostringstream md;
  md << "# " << model.name << ": `" << weights_name << "`\n\n"
     << "Rectified-flow tiny video DiT trained by `sparsetune train` (docs/training.md). "
     << "EMA weights, float16, " << params << " parameters, " << Fixed(mb, 2) << " MB.\n\n"
     << "## Model\n\n"
     << "| frames | size | patch | video tokens | layers | heads x dim | MLP ratio | prompt tokens | "
        "classes | sampler steps |\n|---|---|---|---|---|---|---|---|---|---|\n"
     << "| " << model.frames << " | " << model.height << "x" << model.width << " | " << model.patch
     << " | " << model.geometry().video_tokens() << " | " << model.layers << " | " << model.heads
     << " x " << model.head_dim << " | " << model.mlp_ratio << " | " << model.text_tokens << " | "
     << model.classes << " | " << model.steps << " |\n\n"
     << "## Data\n\nThe real clips of `datasets/prepare_clips.sh` (OpenCV sample videos, "
     << data.height << "x" << data.width << " RGB, 10 fps); each clip is its own class. The last "
     << Fixed(config.heldout_fraction * 100, 0)
     << "% of every clip's frames is held out (never trained on).\n\n"
     << "| clip | class | train frames | held-out frames | source |\n|---|---|---|---|---|\n";
  for (const auto& c : data.clips) {
    md << "| " << c.name << " | " << c.class_id << " | " << c.train_frames << " | "
       << c.heldout_frames << " | " << c.source << " |\n";
  }
  md << "\nTraining windows: random start, temporal stride from {";
  for (size_t i = 0; i < config.frame_strides.size(); ++i) {
    md << (i ? ", " : "") << config.frame_strides[i];
  }
  md << "}, square crop of " << Fixed(config.crop_min, 2) << " to " << Fixed(config.crop_max, 2)
     << " of the frame resized to " << model.height << "x" << model.width
     << (config.flip ? ", random horizontal flips" : "") << "; "
     << Fixed(config.pan_fraction * 100, 0) << "% of video windows pan (the crop moves over the "
     << "window). " << Fixed(config.image_fraction * 100, 0)
     << "% of samples are stills: the frames of one clip at independent random times, each with "
     << "its own crop (joint image-video training, docs/training.md).\n\n"
     << "## Training\n\n"
     << "| steps | batch | peak lr | warm-up | weight decay | EMA | t sampling | device | bf16 "
        "autocast | wall time |\n|---|---|---|---|---|---|---|---|---|---|\n"
     << "| " << r.steps << (r.time_limited ? " (time limit)" : "") << " | " << config.batch
     << " | " << config.lr << " | " << config.warmup_steps << " | " << config.weight_decay
     << " | " << config.ema_decay << " | " << config.timesteps << " | " << r.device << " | "
     << (config.bf16 && config.device == "cuda" ? "yes" : "no") << " | "
     << Fixed(r.wall_s, 1) << " s |\n\n"
     << "## Loss (rectified-flow velocity MSE)\n\n"
     << "Held-out and train-window losses: fixed full-frame windows at t = 0.1, 0.3, 0.5, 0.7, "
        "0.9 with fixed noise (the validation protocol of docs/training.md).\n\n"
     << "| weights | held-out loss |\n|---|---|\n"
     << "| untrained (adaLN-Zero start, step 0) | " << Fixed(r.untrained_heldout_loss, 4) << " |\n"
     << "| untrained (random init, init_seed " << config.init_seed << ", as tests use) | "
     << Fixed(r.random_init_heldout_loss, 4) << " |\n"
     << "| **trained (EMA, shipped)** | **" << Fixed(r.heldout_loss, 4) << "** |\n\n"
     << "Trained EMA weights on fixed training windows: " << Fixed(r.train_windows_loss, 4)
     << "; training loss (raw weights, random windows and t) over the last "
     << config.log_every << " steps: " << Fixed(r.train_loss, 4) << ".\n\n"
     << "Held-out loss during training: ";
  for (size_t i = 0; i < r.heldout_history.size(); ++i) {
    md << (i ? ", " : "") << "step " << r.heldout_history[i].first << ": "
       << Fixed(r.heldout_history[i].second, 4);
  }
  md << ".\n\n## Reproduce\n\n```\n" << command << "\n```\n\n"
     << "(from the repository root, on the device above; sparsetune " << GetBuildInfo().git_commit
     << "). The same seed on another GPU or libtorch gives close, not bit-identical, weights.\n";
  std::ofstream out(r.card);
  out << md.str();
  if (!out) throw RunError(r.card.string() + ": write failed");
}

}  // namespace

TrainResult Train(const TrainConfig& config, const TrainOptions& options) {
  auto say = [&](const std::string& line) {
    if (options.progress) options.progress(line);
  };
  if (config.threads > 0) torch::set_num_threads(static_cast<int>(config.threads));
  torch::Device device(torch::kCPU);
  if (config.device == "cuda") {
    if (!torch::cuda::is_available()) {
      throw InputError(config.source.string() + ": field 'device': \"cuda\" was asked for but no "
                       "CUDA device is available");
    }
    device = torch::Device(torch::kCUDA, 0);
  }
  const bool autocast = config.bf16 && device.is_cuda();
  const TinyVditConfig model_config = TinyVditConfig::Preset(config.preset);
  const int64_t total_steps = options.steps > 0 ? options.steps : config.steps;
  const ClipData data = LoadClipData(config, model_config, device);

  TinyVdit model(model_config, config.init_seed);
  model->ZeroInitGates();
  model->to(device);
  TinyVdit ema(model_config, config.init_seed);
  ema->ZeroInitGates();
  ema->to(device);
  for (auto& p : ema->parameters()) p.set_requires_grad(false);
  int64_t params = 0;
  for (const auto& p : model->parameters()) params += p.numel();

  torch::optim::AdamW optimizer(
      model->parameters(),
      torch::optim::AdamWOptions(config.lr)
          .betas({config.beta1, config.beta2})
          .weight_decay(config.weight_decay)
          .eps(1e-8));

  const LossSet heldout = MakeLossSet(data, FixedWindows(data, config.val_windows, model_config, true),
                                      model_config, device, config.seed ^ kValSeedSalt);
  const LossSet train_windows =
      MakeLossSet(data, FixedWindows(data, config.val_windows, model_config, false), model_config,
                  device, (config.seed ^ kValSeedSalt) + 1);

  TrainResult result;
  result.device = DeviceName(device);
  result.planned_steps = total_steps;
  RunState state;
  if (options.resume) {
    state = LoadCheckpoint(config.checkpoint_dir, config, model, ema, optimizer);
    say("resumed " + config.name + " at step " + std::to_string(state.step) + " from " +
        config.checkpoint_dir.string());
  } else {
    state.untrained = SetLoss(ema, heldout, config.batch, autocast);
    TinyVdit random_init(model_config, config.init_seed);
    random_init->to(device);
    state.random_init = SetLoss(random_init, heldout, config.batch, autocast);
    state.history.emplace_back(0, state.untrained);
    say("training " + config.name + " (" + model_config.name + ", " + std::to_string(params) +
        " parameters) on " + result.device + "; held-out loss untrained " +
        Fixed(state.untrained, 4) + " (random init " + Fixed(state.random_init, 4) + ")");
  }

  std::vector<torch::Tensor> params_list = model->parameters();
  std::vector<torch::Tensor> ema_list = ema->parameters();
  const Clock::time_point start = Clock::now();
  Clock::time_point window_start = start;
  int64_t window_steps = 0;
  torch::Tensor loss_sum = torch::zeros({}, torch::TensorOptions().device(device));
  torch::Tensor grad_norm = torch::zeros({}, torch::TensorOptions().device(device));
  const int64_t first_step = state.step;
  int64_t step = state.step;
  auto validate = [&]() {
    const double loss = SetLoss(ema, heldout, config.batch, autocast);
    if (state.history.empty() || state.history.back().first != step) {
      state.history.emplace_back(step, loss);
    }
    say("step " + std::to_string(step) + "  held-out loss (EMA) " + Fixed(loss, 4));
    return loss;
  };

  model->train();
  const int64_t last_step = options.stop_at > 0 ? std::min(options.stop_at, total_steps) : total_steps;
  while (step < last_step) {
    if (config.time_limit_s > 0 && Seconds(start) >= config.time_limit_s) {
      result.time_limited = true;
      say("time limit of " + Fixed(config.time_limit_s, 0) + " s reached at step " +
          std::to_string(step));
      break;
    }
    const uint64_t step_seed = StepSeed(config.seed, step);
    std::mt19937_64 rng(step_seed);
    auto [x0, labels] = Assemble(data, RandomWindows(data.spans, config, model_config.frames, rng), model_config, device);
    std::vector<float> times;
    std::normal_distribution<double> normal(0.0, 1.0);
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    for (int64_t i = 0; i < config.batch; ++i) {
      const double t = config.timesteps == "uniform" ? unit(rng) : 1.0 / (1.0 + std::exp(-normal(rng)));
      times.push_back(static_cast<float>(t));
    }
    const torch::Tensor t = torch::tensor(times, torch::kFloat32).to(device);
    torch::manual_seed(step_seed);
    const torch::Tensor noise = torch::randn_like(x0);

    const double lr = LearningRate(config, step, total_steps);
    for (auto& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    torch::Tensor loss;
    {
      AutocastScope scope(autocast);
      const torch::Tensor v = model->velocity(Noised(x0, noise, t), t, labels);
      loss = (v.to(torch::kFloat32) - (noise - x0)).pow(2).mean();
    }
    optimizer.zero_grad();
    loss.backward();
    std::vector<torch::Tensor> grads;
    for (const auto& p : params_list) {
      if (p.grad().defined()) grads.push_back(p.grad());
    }
    grad_norm = torch::stack(at::_foreach_norm(grads, 2)).norm();
    if (config.grad_clip > 0) {
      at::_foreach_mul_(grads, (config.grad_clip / (grad_norm + 1e-6)).clamp_max(1.0));
    }
    optimizer.step();
    {
      torch::NoGradGuard no_grad;
      const double decay = std::min(config.ema_decay, (1.0 + static_cast<double>(step)) /
                                                          (10.0 + static_cast<double>(step)));
      at::_foreach_lerp_(ema_list, params_list, 1.0 - decay);
    }
    loss_sum += loss.detach();
    ++step;
    ++window_steps;

    if (step % config.log_every == 0 || step == last_step) {
      const double mean = loss_sum.item<double>() / static_cast<double>(window_steps);
      if (!std::isfinite(mean)) {
        throw RunError(config.name + ": training loss is not finite at step " +
                       std::to_string(step) + " (lower 'lr' or raise 'warmup_steps')");
      }
      state.train_loss = mean;
      const double rate = static_cast<double>(window_steps) / std::max(1e-9, Seconds(window_start));
      const double overall = static_cast<double>(step - first_step) / std::max(1e-9, Seconds(start));
      say("step " + std::to_string(step) + "/" + std::to_string(total_steps) + "  loss " +
          Fixed(mean, 4) + "  grad " + Fixed(grad_norm.item<double>(), 3) + "  lr " +
          Fixed(lr * 1e4, 3) + "e-4  " + Fixed(rate, 1) + " it/s  ETA " +
          Duration(static_cast<double>(total_steps - step) / std::max(1e-9, overall)));
      loss_sum.zero_();
      window_steps = 0;
      window_start = Clock::now();
    }
    if (config.val_every > 0 && step % config.val_every == 0 && step < last_step) validate();
    if (config.checkpoint_every > 0 && step % config.checkpoint_every == 0 && step < last_step) {
      state.step = step;
      SaveCheckpoint(config.checkpoint_dir, config, model, ema, optimizer, state);
    }
  }
  if (window_steps > 0) state.train_loss = loss_sum.item<double>() / static_cast<double>(window_steps);
  result.wall_s = Seconds(start);
  result.steps = step;
  result.heldout_loss = validate();
  result.train_windows_loss = SetLoss(ema, train_windows, config.batch, autocast);
  state.step = step;
  SaveCheckpoint(config.checkpoint_dir, config, model, ema, optimizer, state);

  result.train_loss = state.train_loss;
  result.untrained_heldout_loss = state.untrained;
  result.random_init_heldout_loss = state.random_init;
  result.heldout_history = state.history;
  std::error_code ec;
  std::filesystem::create_directories(config.out, ec);
  if (ec) throw RunError(config.out.string() + ": cannot create folder: " + ec.message());
  result.weights = config.out / (config.name + ".safetensors");
  result.card = config.out / (config.name + ".md");
  ema->SaveWeights(result.weights, torch::kFloat16,
                   {{"trained_steps", std::to_string(step)},
                    {"heldout_loss", Fixed(result.heldout_loss, 6)},
                    {"card", result.card.filename().string()}});
  WriteCard(config, options, model_config, data, params, result);
  say("wrote " + result.weights.string() + " and " + result.card.string() + " (held-out loss " +
      Fixed(result.untrained_heldout_loss, 4) + " untrained -> " + Fixed(result.heldout_loss, 4) +
      " trained, " + std::to_string(step) + " steps in " + Fixed(result.wall_s, 1) + " s)");
  return result;
}

}  // namespace sparsetune
