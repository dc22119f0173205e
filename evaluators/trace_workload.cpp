#include "evaluators/trace_workload.h"

#include <algorithm>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

#include "core/error.h"
#include "core/json_reader.h"
#include "datasets/tensor_io.h"

namespace sparsetune {

namespace {

constexpr const char* kTraceFormat = "sparsetune.trace";
constexpr int64_t kTraceVersion = 1;

std::string ShapeText(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

}  // namespace

TraceWorkload::TraceWorkload(const std::filesystem::path& manifest, torch::TensorOptions options)
    : Workload(options), manifest_(manifest) {
  const std::string source = manifest.string();
  const Json document = LoadJsonFile(manifest);
  if (!document.is_object()) {
    throw InputError(source + ": a trace manifest must be a JSON object (got " +
                     Describe(document) + ")");
  }
  JsonReader root(document, source, "", manifest.parent_path());
  const std::string format = root.string("format");
  if (format != kTraceFormat) {
    root.fail("format", std::string("must be \"") + kTraceFormat + "\" (got \"" + format + "\")");
  }
  root.integer("version", kTraceVersion, kTraceVersion);
  geometry_ = ModelGeometryFromJson(root.raw("model"), source, "model");

  std::map<std::filesystem::path, std::map<std::string, torch::Tensor>> files;
  std::set<std::tuple<int64_t, int64_t, int64_t>> seen;
  int64_t batch = -1;
  const std::vector<JsonReader> entries = root.objects("calls", 1);
  for (size_t i = 0; i < entries.size(); ++i) {
    JsonReader call = entries[i];
    CapturedCall c;
    const int64_t sample = call.integer("sample", 0, 0, 1 << 20);
    c.step = call.integer("step", 0, geometry_.steps - 1);
    c.layer = call.integer("layer", 0, geometry_.layers - 1);
    if (!seen.insert({sample, c.step, c.layer}).second) {
      call.fail("", "duplicate call for sample " + std::to_string(sample) + ", step " +
                        std::to_string(c.step) + ", layer " + std::to_string(c.layer));
    }
    const std::filesystem::path file = call.path("file");
    if (!std::filesystem::exists(file)) {
      call.fail("file", "no such file: " + file.string());
    }
    auto loaded = files.find(file);
    if (loaded == files.end()) loaded = files.emplace(file, LoadTensors(file)).first;
    auto tensor = [&](const char* key) {
      const std::string name = call.string(key);
      auto it = loaded->second.find(name);
      if (it == loaded->second.end()) {
        call.fail(key, "tensor '" + name + "' is not in " + file.string());
      }
      const torch::Tensor& t = it->second;
      const bool ok = t.dim() == 4 && t.size(1) == geometry_.heads &&
                      t.size(2) == geometry_.tokens() && t.size(3) == geometry_.head_dim;
      if (!ok) {
        call.fail(key, "tensor '" + name + "' in " + file.string() + " has shape " +
                           ShapeText(t) + "; the model needs [B, " +
                           std::to_string(geometry_.heads) + ", " +
                           std::to_string(geometry_.tokens()) + ", " +
                           std::to_string(geometry_.head_dim) + "] (heads, tokens, head_dim)");
      }
      if (!t.is_floating_point()) call.fail(key, "tensor '" + name + "' must be floating point");
      if (batch < 0) batch = t.size(0);
      if (t.size(0) != batch) {
        call.fail(key, "tensor '" + name + "' has batch " + std::to_string(t.size(0)) +
                           "; every tensor of a trace needs the same batch (" +
                           std::to_string(batch) + ")");
      }
      if (!torch::isfinite(t).all().item<bool>()) {
        call.fail(key, "tensor '" + name + "' holds NaN or Inf");
      }
      return t.to(options_);
    };
    c.q = tensor("q");
    c.k = tensor("k");
    c.v = tensor("v");
    call.finish();
    calls_[sample].push_back(std::move(c));
  }
  root.finish();
  for (auto& [sample, list] : calls_) {
    std::sort(list.begin(), list.end(), [](const CapturedCall& a, const CapturedCall& b) {
      return std::make_pair(a.step, a.layer) < std::make_pair(b.step, b.layer);
    });
  }
}

const std::vector<CapturedCall>& TraceWorkload::calls_of(const SampleSpec& sample) const {
  auto it = calls_.find(sample.class_id);
  if (it == calls_.end()) {
    throw InputError(manifest_.string() + ": no calls for sample " +
                     std::to_string(sample.class_id) +
                     " (a trace workload's sample \"class\" selects the calls' \"sample\")");
  }
  return it->second;
}

torch::Tensor TraceWorkload::run(const SampleSpec& sample, Runtime& runtime) {
  torch::NoGradGuard no_grad;
  const std::vector<CapturedCall>& calls = calls_of(sample);
  runtime.reset();
  std::vector<torch::Tensor> outputs;
  outputs.reserve(calls.size());
  for (const CapturedCall& c : calls) {
    outputs.push_back(RunAttentionCall(runtime, c.q, c.k, c.v, c.step, c.layer));
  }
  return torch::stack(outputs, 0);
}

Quality TraceWorkload::compare(const torch::Tensor& dense, const torch::Tensor& output) const {
  return CompareAttentionOutputs(dense, output);
}

std::vector<int64_t> TraceWorkload::capture_steps() const {
  std::set<int64_t> distinct;
  for (const auto& [sample, list] : calls_) {
    for (const CapturedCall& c : list) distinct.insert(c.step);
  }
  const std::vector<int64_t> all(distinct.begin(), distinct.end());
  if (all.size() <= 3) return all;
  const size_t n = all.size();
  std::set<int64_t> picked = {all[n / 4], all[n / 2], all[(3 * n) / 4]};
  return {picked.begin(), picked.end()};
}

std::vector<CapturedCall> TraceWorkload::capture(const SampleSpec& sample,
                                                 const std::vector<int64_t>& steps) {
  std::vector<CapturedCall> out;
  for (const CapturedCall& c : calls_of(sample)) {
    if (std::find(steps.begin(), steps.end(), c.step) != steps.end()) out.push_back(c);
  }
  return out;
}

}  // namespace sparsetune
