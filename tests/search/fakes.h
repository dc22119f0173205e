// Test doubles for the search tests: a small job config and a synthetic evaluator whose quality
// falls and speed rises with sparsity.
#pragma once

#include <cmath>
#include <functional>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/eval_result.h"
#include "core/job_config.h"
#include "search/space.h"

namespace sparsetune::test {

inline Json ToyGeometry(int64_t layers = 2, int64_t heads = 3, int64_t steps = 6) {
  return Json{{"name", "toy"},     {"layers", layers}, {"heads", heads},          {"head_dim", 16},
              {"grid", {2, 4, 4}}, {"text_tokens", 0}, {"text_position", "none"}, {"steps", steps}};
}

inline JobConfig ToyConfig(const std::string& strategy = "evolutionary", uint64_t seed = 7) {
  JobConfig c;
  c.name = "toy";
  c.source = "toy.json";
  c.space.budgets = {0.3, 0.5, 0.7, 1.0};
  c.space.warmup_steps = {1, 2};
  c.space.patterns = {"dense", "spatial", "temporal", "block_sparse"};
  c.space.densities = {0.15, 0.3};
  c.space.keeps = {0.2, 0.4};
  c.search.strategy = strategy;
  c.search.population = 8;
  c.search.generations = 3;
  c.search.elites = 2;
  c.search.seed = seed;
  c.objective.min_speedup = 1.6;
  c.raw = Json{{"name", "toy"}, {"search", {{"strategy", strategy}, {"seed", seed}}}};
  return c;
}

// Thrown by FakeEvaluator to simulate the process dying in the middle of a batch.
struct SimulatedKill : std::runtime_error {
  SimulatedKill() : std::runtime_error("simulated kill") {}
};

// A deterministic function of the schedule JSON. Work w in (0, 1] is the mean over steps of
// budget x (0.3 + 0.7 x mean head density); latency = 10 ms x (0.1 + 0.9 w); quality falls with
// sparsity, with a preference for temporal heads in even layers so head choices matter.
class FakeEvaluator : public CandidateEvaluator {
 public:
  explicit FakeEvaluator(Json geometry = ToyGeometry()) : geometry_(std::move(geometry)) {}

  std::vector<EvalResult> evaluate(const std::vector<Json>& schedules) override {
    ++calls;
    std::vector<EvalResult> out;
    for (const Json& s : schedules) {
      if (kill_after >= 0 && evaluations >= kill_after) throw SimulatedKill();
      ++evaluations;
      ++per_schedule[s.dump()];
      out.push_back(Evaluate(s));
    }
    return out;
  }

  EvalResult dense_baseline() override {
    EvalResult r;
    r.ok = true;
    r.psnr = 100;
    r.ssim = 1;
    r.latency_ms = kDenseMs;
    r.dense_latency_ms = kDenseMs;
    r.speedup = 1;
    r.density = 1;
    r.token_density = 1;
    r.latency_source = "wall_clock";
    return r;
  }
  Json model_geometry() const override { return geometry_; }
  std::string device_name() const override { return "fake"; }
  Json head_advice(const std::vector<Json>& options) override {
    ++advice_calls;
    if (!give_advice) return nullptr;
    Json arm = Json::array(), error = Json::array();
    for (int64_t l = 0; l < geometry_["layers"].get<int64_t>(); ++l) {
      Json arm_row = Json::array(), error_row = Json::array();
      for (int64_t h = 0; h < geometry_["heads"].get<int64_t>(); ++h) {
        arm_row.push_back(h % 2 == 0 ? "temporal" : "spatial");
        Json per_option = Json::array();
        for (const Json& o : options) per_option.push_back(OptionError(o, l, h));
        error_row.push_back(per_option);
      }
      arm.push_back(arm_row);
      error.push_back(error_row);
    }
    return Json{{"arm", arm}, {"error", error}};
  }

  // Attention-output error of a head option: grows with sparsity; temporal is best in even layers.
  static double OptionError(const Json& o, int64_t layer, int64_t head) {
    const std::string p = o.at("pattern");
    if (p == "dense") return 0.0;
    const double amount =
        o.contains("keep") ? o.at("keep").get<double>() : o.at("density").get<double>();
    double e = 1.0 - amount;
    if (p == "temporal" && layer % 2 == 0) e *= 0.5;
    if (p == "spatial" && layer % 2 == 1) e *= 0.6;
    return e + 0.01 * static_cast<double>(head);
  }

  EvalResult Evaluate(const Json& s) const {
    EvalResult r;
    if (fail_if && fail_if(s)) {
      r.ok = false;
      r.error = "synthetic failure";
      return r;
    }
    const int64_t steps = s.at("token_budget").size();
    double head_density = 0, head_error = 0;
    int64_t heads = 0;
    for (size_t l = 0; l < s.at("heads").size(); ++l) {
      for (size_t h = 0; h < s.at("heads")[l].size(); ++h) {
        const Json& o = s.at("heads")[l][h];
        const std::string p = o.at("pattern");
        head_density += p == "dense" ? 1.0
                                     : (p == "block_sparse" ? o.at("keep").get<double>()
                                                            : o.at("density").get<double>());
        head_error += OptionError(o, static_cast<int64_t>(l), static_cast<int64_t>(h));
        ++heads;
      }
    }
    head_density /= heads;
    head_error /= heads;
    const int64_t warmup = s.at("dense_warmup_steps");
    double work = 0, budget_loss = 0;
    for (int64_t t = 0; t < steps; ++t) {
      const double b = s.at("token_budget")[t];
      const double d = t < warmup ? 1.0 : head_density;
      work += b * (0.3 + 0.7 * d);
      // Late steps tolerate smaller budgets than early ones.
      budget_loss += (1.0 - b) * (1.0 + static_cast<double>(steps - t) / steps);
    }
    work /= steps;
    budget_loss /= steps;
    const double sparse_steps = static_cast<double>(steps - warmup) / steps;
    r.ok = true;
    r.latency_ms = kDenseMs * (0.1 + 0.9 * work);
    r.dense_latency_ms = kDenseMs;
    r.speedup = r.dense_latency_ms / r.latency_ms;
    const double loss = 12.0 * budget_loss + 18.0 * head_error * sparse_steps;
    r.psnr = loss <= 0 ? 100.0 : std::min(100.0, 45.0 - loss);
    r.ssim = 1.0 - 0.01 * loss;
    r.density = work;
    r.latency_source = "wall_clock";
    return r;
  }

  static constexpr double kDenseMs = 10.0;
  int64_t calls = 0;         // evaluate() calls
  int64_t advice_calls = 0;  // head_advice() calls
  int64_t evaluations = 0;   // schedules evaluated
  int64_t kill_after = -1;   // >= 0: throw SimulatedKill before evaluation number kill_after
  bool give_advice = true;
  std::function<bool(const Json&)> fail_if;     // schedules for which the candidate fails
  std::map<std::string, int64_t> per_schedule;  // evaluations per schedule text

 private:
  Json geometry_;
};

}  // namespace sparsetune::test
