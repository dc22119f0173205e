// Shared by the train tests: a clips folder of procedural clips in the layout of
// datasets/prepare_clips.sh, and a train config for it.
#pragma once

#include <filesystem>
#include <string>

#include <torch/torch.h>

#include "core/json_reader.h"
#include "datasets/clips.h"
#include "datasets/tensor_io.h"
#include "tests/test_util.h"

namespace sparsetune::test {

// Two 40-frame 32x32 procedural clips (classes 0 and 1) with index.json in `dir`.
inline void WriteProceduralClips(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  Json clips = Json::array();
  for (int64_t i = 0; i < 2; ++i) {
    const torch::Tensor frames =
        (ProceduralClip(i + 1, 40, 32, 32, 7 + static_cast<uint64_t>(i)) * 255.0)
            .round()
            .to(torch::kUInt8)
            .permute({0, 2, 3, 1})
            .contiguous();
    const std::string name = "clip" + std::to_string(i);
    SaveTensors(dir / (name + ".safetensors"), {{"frames", frames}}, {{"fps", "10"}});
    clips.push_back({{"name", name}, {"file", name + ".safetensors"}, {"class_id", i},
                     {"frames", 40}, {"height", 32}, {"width", 32}, {"fps", 10},
                     {"source", "procedural"}});
  }
  SaveJsonFile(dir / "index.json", Json{{"version", 1}, {"clips", clips}});
}

// A cpu-tiny train config over `clips`, small enough for a unit test.
inline Json TinyTrainConfig(const std::filesystem::path& root) {
  return Json{{"name", "tiny"},
              {"preset", "cpu-tiny"},
              {"clips", (root / "clips").string()},
              {"out", (root / "models").string()},
              {"checkpoint_dir", (root / "ckpt").string()},
              {"device", "cpu"},
              {"seed", 3},
              {"steps", 4},
              {"batch", 2},
              {"lr", 1e-3},
              {"warmup_steps", 1},
              {"frame_strides", {1, 2}},
              {"val_every", 2},
              {"val_windows", 1},
              {"log_every", 1},
              {"checkpoint_every", 1}};
}

}  // namespace sparsetune::test
