#include "evaluators/analyze.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <iomanip>
#include <set>
#include <sstream>

namespace sparsetune {

namespace {

// Key-set masks [nq, N] (float) for the sampled video queries of one geometry.
struct KeySets {
  torch::Tensor query_index;  // [nq] positions of the sampled queries in the joint sequence
  torch::Tensor same_frame, same_position, strided;
};

KeySets BuildKeySets(const ModelGeometry& g, torch::Device device) {
  const int64_t nv = g.video_tokens();
  const int64_t n = g.tokens();
  const int64_t offset = g.text_position == TextPosition::kFront ? g.text_tokens : 0;
  const int64_t hw = g.grid[1] * g.grid[2];
  const int64_t nq = std::min(nv, kAnalyzeQueries);
  const torch::Tensor query_video =
      torch::linspace(0, static_cast<double>(nv - 1), nq, torch::kFloat64).round().to(torch::kInt64);
  // Video index of every key, -1 for text keys.
  torch::Tensor key_video = torch::arange(n, torch::kInt64) - offset;
  key_video = torch::where((key_video >= 0) & (key_video < nv), key_video,
                           torch::full_like(key_video, -1));
  const torch::Tensor is_video = key_video >= 0;
  const torch::Tensor qf = query_video.div(hw, "floor").unsqueeze(1);
  const torch::Tensor qp = query_video.remainder(hw).unsqueeze(1);
  const torch::Tensor kf = key_video.div(hw, "floor").unsqueeze(0);
  const torch::Tensor kp = key_video.remainder(hw).unsqueeze(0);
  KeySets s;
  s.query_index = (query_video + offset).to(device);
  s.same_frame = (is_video.unsqueeze(0) & (qf == kf)).to(device, torch::kFloat32);
  s.same_position = (is_video.unsqueeze(0) & (qp == kp)).to(device, torch::kFloat32);
  s.strided = (is_video & (key_video.remainder(kAnalyzeStride) == 0))
                  .unsqueeze(0)
                  .expand({nq, n})
                  .to(device, torch::kFloat32);
  return s;
}

std::string Cell(double share, double uniform) {
  std::ostringstream s;
  s << std::fixed << std::setprecision(3) << share << " (" << std::setprecision(1)
    << (uniform > 0 ? share / uniform : 0.0) << "x)";
  return s.str();
}

}  // namespace

AttentionAnalysis AnalyzeAttention(Evaluator& evaluator) {
  torch::NoGradGuard no_grad;
  const ModelGeometry& g = evaluator.workload().geometry();
  const std::vector<CapturedCall>& calls = evaluator.captured_calls();
  const Json advice = evaluator.head_advice({});

  AttentionAnalysis a;
  a.geometry = g;
  std::set<int64_t> steps;
  for (const CapturedCall& c : calls) steps.insert(c.step);
  a.steps.assign(steps.begin(), steps.end());

  const KeySets sets = BuildKeySets(g, calls.front().q.device());
  const int64_t n = g.tokens();
  const torch::Tensor uniform_frame = sets.same_frame.sum(-1).mean() / n;
  const torch::Tensor uniform_position = sets.same_position.sum(-1).mean() / n;
  const torch::Tensor uniform_strided = sets.strided.sum(-1).mean() / n;

  const auto layers = static_cast<size_t>(g.layers);
  const auto heads = static_cast<size_t>(g.heads);
  std::vector<std::vector<std::array<double, 3>>> sums(
      layers, std::vector<std::array<double, 3>>(heads, {0, 0, 0}));
  std::vector<int> counts(layers, 0);
  for (const CapturedCall& c : calls) {
    const auto l = static_cast<size_t>(c.layer);
    counts[l] += 1;
    const double scale = 1.0 / std::sqrt(static_cast<double>(g.head_dim));
    const torch::Tensor q = c.q.index_select(2, sets.query_index).to(torch::kFloat32);
    const torch::Tensor k = c.k.to(torch::kFloat32);
    for (size_t h = 0; h < heads; ++h) {
      const auto hi = static_cast<int64_t>(h);
      // [B, nq, N] attention probabilities of this head's sampled queries.
      const torch::Tensor p =
          torch::softmax(torch::matmul(q.select(1, hi), k.select(1, hi).transpose(1, 2)) * scale,
                         -1);
      sums[l][h][0] += (p * sets.same_frame).sum(-1).mean().item<double>();
      sums[l][h][1] += (p * sets.same_position).sum(-1).mean().item<double>();
      sums[l][h][2] += (p * sets.strided).sum(-1).mean().item<double>();
    }
  }
  for (size_t l = 0; l < layers; ++l) {
    if (counts[l] == 0) continue;
    for (size_t h = 0; h < heads; ++h) {
      HeadStructure s;
      s.layer = static_cast<int64_t>(l);
      s.head = static_cast<int64_t>(h);
      s.same_frame = sums[l][h][0] / counts[l];
      s.same_position = sums[l][h][1] / counts[l];
      s.strided = sums[l][h][2] / counts[l];
      s.uniform_same_frame = uniform_frame.item<double>();
      s.uniform_same_position = uniform_position.item<double>();
      s.uniform_strided = uniform_strided.item<double>();
      s.arm_pick = advice["arm"][l][h].get<std::string>();
      a.heads.push_back(s);
    }
  }
  return a;
}

Json ToJson(const AttentionAnalysis& a) {
  Json heads = Json::array();
  for (const HeadStructure& s : a.heads) {
    heads.push_back({{"layer", s.layer},
                     {"head", s.head},
                     {"same_frame", s.same_frame},
                     {"same_position", s.same_position},
                     {"strided", s.strided},
                     {"uniform_same_frame", s.uniform_same_frame},
                     {"uniform_same_position", s.uniform_same_position},
                     {"uniform_strided", s.uniform_strided},
                     {"arm_pick", s.arm_pick}});
  }
  return {{"model", ModelGeometryToJson(a.geometry)},
          {"steps", a.steps},
          {"queries_per_call", kAnalyzeQueries},
          {"stride", kAnalyzeStride},
          {"heads", heads}};
}

std::string FormatAnalysis(const AttentionAnalysis& a) {
  std::ostringstream out;
  out << "attention structure of " << a.geometry.name << " (dense run of calibration sample 0, "
      << "steps";
  for (int64_t s : a.steps) out << " " << s;
  out << "; share of attention mass, ratio to uniform attention in parentheses)\n";
  out << std::left << std::setw(6) << "layer" << std::setw(5) << "head" << std::setw(18)
      << "same_frame" << std::setw(18) << "same_position" << std::setw(18)
      << ("strided/" + std::to_string(kAnalyzeStride)) << "arm_pick\n";
  for (const HeadStructure& s : a.heads) {
    out << std::left << std::setw(6) << s.layer << std::setw(5) << s.head << std::setw(18)
        << Cell(s.same_frame, s.uniform_same_frame) << std::setw(18)
        << Cell(s.same_position, s.uniform_same_position) << std::setw(18)
        << Cell(s.strided, s.uniform_strided) << s.arm_pick << "\n";
  }
  return out.str();
}

}  // namespace sparsetune
