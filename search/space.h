// The search space of one job: which genes a candidate has, which values each gene may take, and
// how a genome becomes a schedule v1 document (kernels/schedule.h describes the format; this
// library only writes the JSON so it never depends on kernels or torch).
//
// Genome layout (docs/search.md):
//   warmup        index into SearchSpace::warmup_choices()     dense warm-up steps
//   budgets[s]    index into SearchSpace::budget_grid()         Astraea token budget of step s
//   heads[l*H+h]  index into SearchSpace::head_options()        pattern of (layer l, head h)
//   reuse[s]      index into SearchSpace::reuse_choices()       TimeRipple threshold of step s
//                 (0 = off; empty when the config lists no reuse_thresholds)
// Genes that cannot matter (budgets and reuse of warm-up steps) are normalised to their neutral
// value by Normalize(), so two genomes with the same schedule have the same hash.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/job_config.h"
#include "core/json_reader.h"

namespace sparsetune {

struct Genome {
  int64_t warmup = 0;            // index into warmup_choices()
  std::vector<int64_t> budgets;  // per step: index into budget_grid()
  std::vector<int64_t> heads;    // per (layer, head), layer-major: index into head_options()
  std::vector<int64_t> reuse;    // per step: index into reuse_choices(); empty when not searched

  bool operator==(const Genome& o) const {
    return warmup == o.warmup && budgets == o.budgets && heads == o.heads && reuse == o.reuse;
  }
  bool operator!=(const Genome& o) const { return !(*this == o); }
};

// Canonical JSON: {"budgets": [...], "heads": [[...] per layer], "reuse": [...], "warmup": i}
// (keys sorted, no whitespace when dumped). `layers`/`heads_per_layer` shape the heads matrix.
Json GenomeToJson(const Genome& g, int64_t heads_per_layer);
// Hex (16 digits) 64-bit FNV-1a of the canonical JSON text; stable across runs and platforms.
std::string GenomeHash(const Genome& g, int64_t heads_per_layer);
// 64-bit FNV-1a of a byte string (exposed for tests and for the genome hash).
uint64_t Fnv1a64(const std::string& bytes);

class SearchSpace {
 public:
  // Model geometry: the schedule-v1 "model" object (CandidateEvaluator::model_geometry()); needs
  // positive integers "layers", "heads" and "steps". Throws InputError naming the field otherwise.
  SearchSpace(const JobConfig& config, const Json& model_geometry);

  int64_t layers() const { return layers_; }
  int64_t heads_per_layer() const { return heads_; }
  int64_t steps() const { return steps_; }
  int64_t head_count() const { return layers_ * heads_; }

  // Sorted ascending, unique, always ends with 1.0 (so the dense baseline is a point of the space).
  const std::vector<double>& budget_grid() const { return budget_grid_; }
  // Warm-up step counts as listed in the config, clamped to the number of steps.
  const std::vector<int64_t>& warmup_choices() const { return warmup_choices_; }
  // Schedule-v1 head pattern objects; index 0 is always {"pattern": "dense"}. Order: dense,
  // spatial, temporal, textural (each x densities), block_sparse (x keeps), auto (x densities).
  const std::vector<Json>& head_options() const { return head_options_; }
  // Estimated fraction of attention work of each head option (dense 1, others their density/keep).
  const std::vector<double>& option_costs() const { return option_costs_; }
  // Reuse thresholds per step; index 0 is "off" (written as kReuseOff). Empty when not searched.
  const std::vector<double>& reuse_choices() const { return reuse_choices_; }
  bool reuse_enabled() const { return !reuse_choices_.empty(); }

  // Threshold the schedule uses for "no reuse at this step" (> 1 disables, kernels/schedule.h).
  static constexpr double kReuseOff = 2.0;

  int64_t full_budget_index() const { return static_cast<int64_t>(budget_grid_.size()) - 1; }
  int64_t warmup_of(const Genome& g) const { return warmup_choices_[g.warmup]; }
  // Index of the grid value nearest to `budget` (ties: the larger budget).
  int64_t NearestBudget(double budget) const;
  // Index of the head option equal to `option` (same JSON), or -1.
  int64_t FindOption(const Json& option) const;
  // Index of the option of `pattern` whose density/keep is nearest to `amount`, or -1 if the
  // pattern is not in the space.
  int64_t FindOption(const std::string& pattern, double amount) const;

  // Number of values each gene may take, in the flat order warmup, budgets, heads, reuse.
  std::vector<int64_t> GeneCardinalities() const;
  int64_t GeneCount() const;

  // Sets genes that cannot affect the schedule to their neutral value (warm-up steps: budget 1.0,
  // reuse off). Every strategy normalises before proposing, so equal schedules hash equally.
  void Normalize(Genome* g) const;
  // Throws InputError("<source>: field '<path>': ...") when sizes or indices do not fit the space.
  void Check(const Genome& g, const std::string& source) const;

  Json ToJson(const Genome& g) const { return GenomeToJson(g, heads_); }
  std::string Hash(const Genome& g) const { return GenomeHash(g, heads_); }
  // Parses and checks a genome written by ToJson.
  Genome FromJson(const Json& j, const std::string& source) const;

  // The complete schedule v1 document for `g` (format, version, model, block_size, token_order,
  // dense_warmup_steps, token_budget with warm-up steps at 1.0, heads[layer][head], reuse).
  Json ToSchedule(const Genome& g) const;

  // Named genomes (all normalised). `warmup` is an index into warmup_choices().
  Genome Dense() const;  // warm-up index 0, every budget 1.0, every head dense, no reuse
  // Every head `option`, every budget 1.0, warm-up DefaultWarmup().
  Genome UniformHeads(int64_t option) const;
  // Every budget the grid value nearest to `budget`, dense heads, warm-up DefaultWarmup().
  Genome UniformBudget(double budget) const;
  // heads[l][h] option indices, budgets 1.0, warm-up DefaultWarmup(). Throws InputError on shape.
  Genome FromHeadChoices(const std::vector<std::vector<int64_t>>& heads) const;
  // The middle listed warm-up choice: what seeds other than dense use.
  int64_t DefaultWarmup() const { return static_cast<int64_t>(warmup_choices_.size()) / 2; }

 private:
  int64_t layers_ = 0;
  int64_t heads_ = 0;
  int64_t steps_ = 0;
  Json model_;
  ScheduleBaseConfig base_;
  std::vector<double> budget_grid_;
  std::vector<int64_t> warmup_choices_;
  std::vector<Json> head_options_;
  std::vector<double> option_costs_;
  std::vector<std::string> option_patterns_;
  std::vector<double> option_amounts_;
  std::vector<double> reuse_choices_;
};

}  // namespace sparsetune
