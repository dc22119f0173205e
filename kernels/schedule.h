// Schedule file v1: what the runtime executes for every (step, layer, head) of one model at one
// resolution. Self-describing: it carries the model geometry it was made for, so a schedule used
// at another shape is rejected instead of silently misbehaving. The normative description for
// users is docs/schedule-format.md and configs/schedule.schema.json; keep them in step.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "core/json_reader.h"

namespace sparsetune {

enum class TextPosition { kNone, kFront, kBack };
enum class PatternKind { kDense, kSpatial, kTemporal, kTextural, kBlockSparse, kAuto };
enum class TokenOrderKind { kRaster, kTiles };

const char* ToString(TextPosition p);
const char* ToString(PatternKind p);
const char* ToString(TokenOrderKind k);

// The attention geometry of one model at one resolution.
struct ModelGeometry {
  std::string name;                  // model name, e.g. "tiny-vdit/cpu-tiny"
  int64_t layers = 0;                // attention layers (DiT blocks)
  int64_t heads = 0;                 // attention heads per layer
  int64_t head_dim = 0;              // channels per head
  std::array<int64_t, 3> grid = {0, 0, 0};  // latent grid [frames, height, width] in tokens
  int64_t text_tokens = 0;           // prompt/text tokens in the joint sequence
  TextPosition text_position = TextPosition::kNone;  // where text sits in the sequence
  int64_t steps = 0;                 // denoising steps of one generation
  // RoPE channel split of head_dim into (t, h, w) groups, in channels (sums to head_dim).
  // Defaults to Wan2.1's split when absent in the file (see RopeSplitFor).
  std::array<int64_t, 3> rope_split = {0, 0, 0};

  int64_t video_tokens() const { return grid[0] * grid[1] * grid[2]; }
  int64_t tokens() const { return video_tokens() + text_tokens; }
  bool operator==(const ModelGeometry& o) const;
  bool operator!=(const ModelGeometry& o) const { return !(*this == o); }
};

// Wan2.1's RoPE split: c = head_dim/2 channel pairs as [c - 2*(c/3), c/3, c/3], in channels.
std::array<int64_t, 3> RopeSplitFor(int64_t head_dim);

// Order in which video tokens are laid out before they are cut into blocks.
struct TokenOrder {
  TokenOrderKind kind = TokenOrderKind::kTiles;
  std::array<int64_t, 3> tile = {1, 4, 4};  // tile [frames, height, width] (tiles only)
  // Compares `tile` only for kTiles (raster ignores it).
  bool operator==(const TokenOrder& o) const;
  bool operator!=(const TokenOrder& o) const { return !(*this == o); }
};

// One head's pattern and its parameters. Which fields matter depends on `pattern`.
struct HeadPattern {
  PatternKind pattern = PatternKind::kDense;
  double density = 1.0;          // spatial/temporal/textural: target fraction of key blocks
  double keep = 1.0;             // block_sparse: fraction of key blocks kept per query block
  bool first_frame_sink = true;  // block_sparse: first-frame rows and columns dense
  int64_t mask_refresh = 1;      // block_sparse: recompute the mask every N steps (cached between)
  int64_t arm_refresh = 4;       // auto: re-run ARM's recognition every N steps
  // Compares only the fields `pattern` uses: patterns that run the same compare equal.
  bool operator==(const HeadPattern& o) const;
  bool operator!=(const HeadPattern& o) const { return !(*this == o); }
};

// Replaces the pattern of some heads for a range of steps. -1 in layer/head means "all".
struct PatternOverride {
  int64_t step_begin = 0;  // first step (inclusive)
  int64_t step_end = 0;    // last step (exclusive)
  int64_t layer = -1;
  int64_t head = -1;
  HeadPattern pattern;
  bool operator==(const PatternOverride& o) const;
  bool operator!=(const PatternOverride& o) const { return !(*this == o); }
};

// TimeRipple reuse of partial attention scores per RoPE channel group.
struct ReuseConfig {
  bool enabled = false;
  // Per step: reuse a key's (t/h/w)-group partial scores from its reference token when the
  // cosine similarity of their group channels is >= threshold[step]; > 1 disables at that step.
  std::vector<double> threshold;
  // Compares `threshold` only when enabled (disabled reuse ignores it).
  bool operator==(const ReuseConfig& o) const;
  bool operator!=(const ReuseConfig& o) const { return !(*this == o); }
};

struct Schedule {
  static constexpr int kVersion = 1;
  static constexpr const char* kFormat = "sparsetune.schedule";  // the file's "format" value
  ModelGeometry model;
  int64_t block_size = 32;                // tokens per attention block (query and key)
  TokenOrder token_order;
  int64_t dense_warmup_steps = 0;         // steps [0, n) run dense attention, full budget
  std::vector<double> token_budget;       // per step: fraction of tokens computed (Astraea)
  std::vector<std::vector<HeadPattern>> heads;  // [layer][head]
  std::vector<PatternOverride> overrides;       // applied in order; later ones win
  ReuseConfig reuse;
  Json provenance = Json::object();       // job, candidate, metrics, device, toolkit, created

  // The pattern in force for (step, layer, head), after warm-up and overrides.
  HeadPattern pattern_at(int64_t step, int64_t layer, int64_t head) const;
  // The token budget in force at `step` (1 during warm-up).
  double budget_at(int64_t step) const;

  // A schedule that runs everything dense, for `model`.
  static Schedule Dense(const ModelGeometry& model);

  // Field-by-field equality (what a JSON round trip preserves).
  bool operator==(const Schedule& o) const;
  bool operator!=(const Schedule& o) const { return !(*this == o); }
};

// Throws InputError("<source>: field '<path>': ...") for any invalid field, including internal
// inconsistencies (heads shape vs geometry, budget length vs steps, ...).
Schedule ScheduleFromJson(const Json& document, const std::string& source);
Json ScheduleToJson(const Schedule& schedule);
Schedule LoadSchedule(const std::filesystem::path& path);
void SaveSchedule(const std::filesystem::path& path, const Schedule& schedule);

// Re-checks a schedule built in code (the same rules as the file reader).
void ValidateSchedule(const Schedule& schedule, const std::string& source);

// Throws InputError naming the first field of `schedule.model` that differs from `workload`.
// A rope_split of {0, 0, 0} on either side stands for RopeSplitFor(head_dim).
void CheckGeometryMatches(const Schedule& schedule, const ModelGeometry& workload,
                          const std::string& source);

// The pieces of a schedule file on their own, with the same rules and messages: a head pattern
// object (e.g. the search's head options) and the "model" object. `path` names the value in
// messages ("" for a document root).
HeadPattern HeadPatternFromJson(const Json& value, const std::string& source,
                                const std::string& path = "");
Json HeadPatternToJson(const HeadPattern& pattern);
// Fills rope_split with RopeSplitFor(head_dim) when the object has none.
ModelGeometry ModelGeometryFromJson(const Json& value, const std::string& source,
                                    const std::string& path = "");
Json ModelGeometryToJson(const ModelGeometry& model);

// True when `document` declares itself a schedule ("format": "sparsetune.schedule").
bool LooksLikeSchedule(const Json& document);

}  // namespace sparsetune
