// Attention structure per (layer, head): RainFusion's recognition statistics, measured on the
// dense run of the first calibration sample and averaged over the captured steps.
//
// For video queries (up to kAnalyzeQueries, evenly spaced) the softmax attention over all keys is
// split into the mass on
//   same_frame     video keys in the query's frame                   (spatial heads)
//   same_position  video keys at the query's (row, column), any frame (temporal heads)
//   strided        every kAnalyzeStride-th video key                  (textural heads)
// and compared with what uniform attention over all keys would put there. ARM's pick comes from
// the runtime's auto pattern on the same q/k. Method: docs/workloads.md, "analyze".
#pragma once

#include <string>
#include <vector>

#include "core/json_reader.h"
#include "evaluators/evaluator.h"

namespace sparsetune {

constexpr int64_t kAnalyzeQueries = 256;  // video queries sampled per call and head
constexpr int64_t kAnalyzeStride = 4;     // stride of the strided key subset

struct HeadStructure {
  int64_t layer = 0;
  int64_t head = 0;
  double same_frame = 0;             // share of attention mass on same-frame video keys
  double same_position = 0;          // ... on same-(row, column) video keys across frames
  double strided = 0;                // ... on the strided video key subset
  double uniform_same_frame = 0;     // share uniform attention would put on the same keys
  double uniform_same_position = 0;
  double uniform_strided = 0;
  std::string arm_pick;              // ARM's pattern for the head (majority over the steps)
};

struct AttentionAnalysis {
  ModelGeometry geometry;
  std::vector<int64_t> steps;        // the steps averaged over
  std::vector<HeadStructure> heads;  // layer-major
};

// Analyses the evaluator's workload (captures its dense q/k/v; no candidate runs).
AttentionAnalysis AnalyzeAttention(Evaluator& evaluator);

Json ToJson(const AttentionAnalysis& analysis);
// A readable table, one row per (layer, head), with the ratio to uniform in parentheses.
std::string FormatAnalysis(const AttentionAnalysis& analysis);

}  // namespace sparsetune
