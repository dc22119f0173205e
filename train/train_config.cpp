#include "train/train_config.h"

#include "core/json_reader.h"

namespace sparsetune {

TrainConfig LoadTrainConfig(const std::filesystem::path& path) {
  const Json document = LoadJsonFile(path);
  std::filesystem::path base = path.parent_path();
  if (base.empty()) base = ".";
  JsonReader r(document, path.string(), "", base);
  TrainConfig c;
  c.source = path;
  c.name = r.string("name");
  if (c.name.empty() || c.name.find('/') != std::string::npos) {
    r.fail("name", "must be a non-empty file stem without '/'");
  }
  c.preset = r.choice("preset", {"cpu-tiny", "gpu-small"});
  c.clips = r.path("clips");
  c.out = r.path("out");
  c.checkpoint_dir = r.path("checkpoint_dir");
  c.device = r.choice("device", "cpu", {"cpu", "cuda"});
  c.threads = r.integer("threads", 0, 0, 1024);
  c.bf16 = r.boolean("bf16", true);
  c.seed = static_cast<uint64_t>(r.integer("seed", 0, 0, int64_t{1} << 53));
  c.init_seed = static_cast<uint64_t>(r.integer("init_seed", 0, 0, int64_t{1} << 53));
  c.steps = r.integer("steps", 1, int64_t{1} << 30);
  c.batch = r.integer("batch", 1, 4096);
  c.lr = r.number("lr", 1e-7, 1.0);
  c.min_lr_ratio = r.number("min_lr_ratio", 0.1, 0.0, 1.0);
  c.warmup_steps = r.integer("warmup_steps", 100, 0, int64_t{1} << 30);
  c.weight_decay = r.number("weight_decay", 0.01, 0.0, 1.0);
  c.beta1 = r.number("beta1", 0.9, 0.0, 0.999999);
  c.beta2 = r.number("beta2", 0.99, 0.0, 0.999999);
  c.grad_clip = r.number("grad_clip", 1.0, 0.0, 1e6);
  c.ema_decay = r.number("ema_decay", 0.999, 0.0, 0.999999);
  c.heldout_fraction = r.number("heldout_fraction", 0.2, 0.01, 0.5);
  if (r.has("frame_strides")) c.frame_strides = r.integers("frame_strides", 1, 16, 1);
  c.crop_min = r.number("crop_min", 0.6, 0.05, 1.0);
  c.crop_max = r.number("crop_max", 1.0, 0.05, 1.0);
  if (c.crop_min > c.crop_max) r.fail("crop_min", "must be <= crop_max");
  c.flip = r.boolean("flip", true);
  c.image_fraction = r.number("image_fraction", 0.0, 0.0, 1.0);
  if (c.image_fraction >= 1.0) {
    r.fail("image_fraction", "must be < 1 (a video model needs video windows)");
  }
  c.pan_fraction = r.number("pan_fraction", 0.0, 0.0, 1.0);
  if (c.pan_fraction > 0 && c.crop_min >= 1.0) {
    r.fail("pan_fraction", "needs crop_min < 1 (a full-frame crop has no room to pan)");
  }
  c.timesteps = r.choice("timesteps", "logit-normal", {"logit-normal", "uniform"});
  c.val_every = r.integer("val_every", 250, 0, int64_t{1} << 30);
  c.val_windows = r.integer("val_windows", 4, 1, 1024);
  c.log_every = r.integer("log_every", 50, 1, int64_t{1} << 30);
  c.checkpoint_every = r.integer("checkpoint_every", 500, 0, int64_t{1} << 30);
  c.time_limit_s = r.number("time_limit_s", 0.0, 0.0, 1e7);
  r.finish();
  return c;
}

}  // namespace sparsetune
