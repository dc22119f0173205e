#include "search/space.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "core/error.h"

namespace sparsetune {

uint64_t Fnv1a64(const std::string& bytes) {
  uint64_t h = 14695981039346656037ULL;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ULL;
  }
  return h;
}

Json GenomeToJson(const Genome& g, int64_t heads_per_layer) {
  Json heads = Json::array();
  for (size_t i = 0; i < g.heads.size(); ++i) {
    if (heads_per_layer > 0 && i % static_cast<size_t>(heads_per_layer) == 0) {
      heads.push_back(Json::array());
    }
    heads.back().push_back(g.heads[i]);
  }
  Json j = Json::object();
  j["warmup"] = g.warmup;
  j["budgets"] = g.budgets;
  j["heads"] = heads;
  j["reuse"] = g.reuse;
  return j;
}

std::string GenomeHash(const Genome& g, int64_t heads_per_layer) {
  // nlohmann::json keeps object keys sorted, so dump() is canonical for our integer-only genomes.
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx",
                static_cast<unsigned long long>(Fnv1a64(GenomeToJson(g, heads_per_layer).dump())));
  return text;
}

namespace {

int64_t PositiveInt(const Json& model, const char* key) {
  const std::string where = std::string("model geometry: field 'model.") + key + "'";
  if (!model.is_object() || !model.contains(key)) throw InputError(where + ": missing");
  const Json& v = model.at(key);
  if (!v.is_number_integer() || v.get<int64_t>() < 1) {
    throw InputError(where + ": must be an integer >= 1 (got " + Describe(v) + ")");
  }
  return v.get<int64_t>();
}

bool Lists(const std::vector<std::string>& patterns, const std::string& p) {
  return std::find(patterns.begin(), patterns.end(), p) != patterns.end();
}

}  // namespace

SearchSpace::SearchSpace(const JobConfig& config, const Json& model_geometry)
    : model_(model_geometry), base_(config.schedule) {
  layers_ = PositiveInt(model_geometry, "layers");
  heads_ = PositiveInt(model_geometry, "heads");
  steps_ = PositiveInt(model_geometry, "steps");

  budget_grid_ = config.space.budgets;
  budget_grid_.push_back(1.0);
  std::sort(budget_grid_.begin(), budget_grid_.end());
  budget_grid_.erase(std::unique(budget_grid_.begin(), budget_grid_.end()), budget_grid_.end());

  for (int64_t w : config.space.warmup_steps) warmup_choices_.push_back(std::min(w, steps_));
  if (warmup_choices_.empty()) warmup_choices_.push_back(0);

  auto add = [this](Json option, const std::string& pattern, double amount, double cost) {
    head_options_.push_back(std::move(option));
    option_patterns_.push_back(pattern);
    option_amounts_.push_back(amount);
    option_costs_.push_back(cost);
  };
  add(Json{{"pattern", "dense"}}, "dense", 1.0, 1.0);
  const std::vector<std::string>& patterns = config.space.patterns;
  for (const char* rf : {"spatial", "temporal", "textural"}) {
    if (!Lists(patterns, rf)) continue;
    for (double d : config.space.densities) add(Json{{"pattern", rf}, {"density", d}}, rf, d, d);
  }
  if (Lists(patterns, "block_sparse")) {
    for (double k : config.space.keeps) {
      add(Json{{"pattern", "block_sparse"},
               {"keep", k},
               {"first_frame_sink", base_.first_frame_sink},
               {"mask_refresh", base_.mask_refresh}},
          "block_sparse", k, k);
    }
  }
  if (Lists(patterns, "auto")) {
    for (double d : config.space.densities) {
      add(Json{{"pattern", "auto"}, {"density", d}, {"arm_refresh", base_.arm_refresh}}, "auto", d,
          d);
    }
  }

  if (!config.space.reuse_thresholds.empty()) {
    reuse_choices_.push_back(kReuseOff);
    for (double t : config.space.reuse_thresholds) reuse_choices_.push_back(t);
  }
}

int64_t SearchSpace::NearestBudget(double budget) const {
  int64_t best = 0;
  for (size_t i = 1; i < budget_grid_.size(); ++i) {
    if (std::abs(budget_grid_[i] - budget) <= std::abs(budget_grid_[best] - budget)) {
      best = static_cast<int64_t>(i);
    }
  }
  return best;
}

int64_t SearchSpace::FindOption(const Json& option) const {
  for (size_t i = 0; i < head_options_.size(); ++i) {
    if (head_options_[i] == option) return static_cast<int64_t>(i);
  }
  return -1;
}

int64_t SearchSpace::FindOption(const std::string& pattern, double amount) const {
  int64_t best = -1;
  for (size_t i = 0; i < head_options_.size(); ++i) {
    if (option_patterns_[i] != pattern) continue;
    if (best < 0 ||
        std::abs(option_amounts_[i] - amount) < std::abs(option_amounts_[best] - amount)) {
      best = static_cast<int64_t>(i);
    }
  }
  return best;
}

std::vector<int64_t> SearchSpace::GeneCardinalities() const {
  std::vector<int64_t> c;
  c.reserve(GeneCount());
  c.push_back(static_cast<int64_t>(warmup_choices_.size()));
  for (int64_t s = 0; s < steps_; ++s) c.push_back(static_cast<int64_t>(budget_grid_.size()));
  for (int64_t i = 0; i < head_count(); ++i)
    c.push_back(static_cast<int64_t>(head_options_.size()));
  if (reuse_enabled()) {
    for (int64_t s = 0; s < steps_; ++s) c.push_back(static_cast<int64_t>(reuse_choices_.size()));
  }
  return c;
}

int64_t SearchSpace::GeneCount() const {
  return 1 + steps_ + head_count() + (reuse_enabled() ? steps_ : 0);
}

void SearchSpace::Normalize(Genome* g) const {
  const int64_t w = warmup_of(*g);
  for (int64_t s = 0; s < w && s < static_cast<int64_t>(g->budgets.size()); ++s) {
    g->budgets[s] = full_budget_index();
  }
  for (int64_t s = 0; s < w && s < static_cast<int64_t>(g->reuse.size()); ++s) g->reuse[s] = 0;
}

void SearchSpace::Check(const Genome& g, const std::string& source) const {
  auto fail = [&source](const std::string& field, const std::string& what) {
    throw InputError(source + ": field 'genome." + field + "': " + what);
  };
  auto check_list = [&](const std::vector<int64_t>& genes, const std::string& name, size_t size,
                        size_t choices) {
    if (genes.size() != size) {
      fail(name, "must have " + std::to_string(size) + " entries (got " +
                     std::to_string(genes.size()) + ")");
    }
    for (size_t i = 0; i < genes.size(); ++i) {
      if (genes[i] < 0 || static_cast<size_t>(genes[i]) >= choices) {
        fail(name + "[" + std::to_string(i) + "]", "must be an index in [0, " +
                                                       std::to_string(choices) + ") (got " +
                                                       std::to_string(genes[i]) + ")");
      }
    }
  };
  if (g.warmup < 0 || static_cast<size_t>(g.warmup) >= warmup_choices_.size()) {
    fail("warmup", "must be an index in [0, " + std::to_string(warmup_choices_.size()) + ") (got " +
                       std::to_string(g.warmup) + ")");
  }
  check_list(g.budgets, "budgets", steps_, budget_grid_.size());
  check_list(g.heads, "heads", head_count(), head_options_.size());
  check_list(g.reuse, "reuse", reuse_enabled() ? steps_ : 0, reuse_choices_.size());
}

Genome SearchSpace::FromJson(const Json& j, const std::string& source) const {
  JsonReader r(j, source, "genome");
  Genome g;
  g.warmup = r.integer("warmup");
  g.budgets = r.integers("budgets", 0, std::numeric_limits<int64_t>::max());
  const Json& heads = r.raw("heads");
  if (!heads.is_array() || static_cast<int64_t>(heads.size()) != layers_) {
    r.fail("heads", "must be an array of " + std::to_string(layers_) + " layers (got " +
                        Describe(heads) + ")");
  }
  for (size_t l = 0; l < heads.size(); ++l) {
    const std::string at = "heads[" + std::to_string(l) + "]";
    if (!heads[l].is_array() || static_cast<int64_t>(heads[l].size()) != heads_) {
      r.fail(at, "must be an array of " + std::to_string(heads_) + " option indices (got " +
                     Describe(heads[l]) + ")");
    }
    for (size_t h = 0; h < heads[l].size(); ++h) {
      if (!heads[l][h].is_number_integer()) {
        r.fail(at + "[" + std::to_string(h) + "]",
               "must be an integer (got " + Describe(heads[l][h]) + ")");
      }
      g.heads.push_back(heads[l][h].get<int64_t>());
    }
  }
  g.reuse = r.integers("reuse", 0, std::numeric_limits<int64_t>::max());
  r.finish();
  Check(g, source);
  return g;
}

Json SearchSpace::ToSchedule(const Genome& g) const {
  Check(g, "search space");
  const int64_t warmup = warmup_of(g);
  Json doc = Json::object();
  doc["format"] = "sparsetune.schedule";
  doc["version"] = 1;
  doc["model"] = model_;
  doc["block_size"] = base_.block_size;
  if (base_.token_order == "raster") {
    doc["token_order"] = Json{{"kind", "raster"}};
  } else {
    doc["token_order"] = Json{{"kind", "tiles"}, {"tile", base_.tile}};
  }
  doc["dense_warmup_steps"] = warmup;
  Json budgets = Json::array();
  for (int64_t s = 0; s < steps_; ++s) {
    budgets.push_back(s < warmup ? 1.0 : budget_grid_[g.budgets[s]]);
  }
  doc["token_budget"] = budgets;
  Json heads = Json::array();
  for (int64_t l = 0; l < layers_; ++l) {
    Json row = Json::array();
    for (int64_t h = 0; h < heads_; ++h) row.push_back(head_options_[g.heads[l * heads_ + h]]);
    heads.push_back(row);
  }
  doc["heads"] = heads;
  if (reuse_enabled()) {
    Json thresholds = Json::array();
    for (int64_t s = 0; s < steps_; ++s) {
      thresholds.push_back(s < warmup ? kReuseOff : reuse_choices_[g.reuse[s]]);
    }
    doc["reuse"] = Json{{"kind", "timeripple"}, {"threshold", thresholds}};
  }
  return doc;
}

Genome SearchSpace::Dense() const {
  Genome g;
  g.warmup = 0;
  g.budgets.assign(steps_, full_budget_index());
  g.heads.assign(head_count(), 0);
  if (reuse_enabled()) g.reuse.assign(steps_, 0);
  return g;
}

Genome SearchSpace::UniformHeads(int64_t option) const {
  if (option < 0 || static_cast<size_t>(option) >= head_options_.size()) {
    throw InputError("search space: head option " + std::to_string(option) + " out of range");
  }
  Genome g = Dense();
  g.warmup = DefaultWarmup();
  g.heads.assign(head_count(), option);
  Normalize(&g);
  return g;
}

Genome SearchSpace::UniformBudget(double budget) const {
  Genome g = Dense();
  g.warmup = DefaultWarmup();
  g.budgets.assign(steps_, NearestBudget(budget));
  Normalize(&g);
  return g;
}

Genome SearchSpace::FromHeadChoices(const std::vector<std::vector<int64_t>>& heads) const {
  Genome g = Dense();
  g.warmup = DefaultWarmup();
  if (static_cast<int64_t>(heads.size()) != layers_) {
    throw InputError("search space: head choices have " + std::to_string(heads.size()) +
                     " layers, the model has " + std::to_string(layers_));
  }
  g.heads.clear();
  for (const auto& row : heads) {
    if (static_cast<int64_t>(row.size()) != heads_) {
      throw InputError("search space: head choices have a layer of " + std::to_string(row.size()) +
                       " heads, the model has " + std::to_string(heads_));
    }
    g.heads.insert(g.heads.end(), row.begin(), row.end());
  }
  Check(g, "head choices");
  Normalize(&g);
  return g;
}

}  // namespace sparsetune
