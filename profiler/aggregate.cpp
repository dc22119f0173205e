// Kernel categories, per-kernel and per-category aggregation, and the summary both profilers
// share (profiler.h).
#include <cxxabi.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <limits>
#include <map>
#include <memory>
#include <utility>

#include "profiler/profiler.h"

namespace sparsetune {
namespace {

std::string Lower(const std::string& s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool Contains(const std::string& haystack, const char* needle) {
  return haystack.find(needle) != std::string::npos;
}

// True when `word` appears as a whole identifier piece: "arm" matches "arm_recognize" and
// "sparsetune::arm" but not "warmup" or "harmonic". Used for keys short enough to hide inside
// unrelated words.
bool ContainsWord(const std::string& haystack, const std::string& word) {
  for (size_t pos = haystack.find(word); pos != std::string::npos;
       pos = haystack.find(word, pos + 1)) {
    const bool left = pos == 0 || !std::isalnum(static_cast<unsigned char>(haystack[pos - 1]));
    const size_t after = pos + word.size();
    const bool right =
        after == haystack.size() || !std::isalnum(static_cast<unsigned char>(haystack[after]));
    if (left && right) return true;
  }
  return false;
}

// Median of weighted values: each value counts `weight` times (even total: mean of the two
// middle ones), so that a category's median weighs each kernel by its launches.
double WeightedMedian(std::vector<std::pair<double, int64_t>> values) {
  int64_t total = 0;
  for (const auto& v : values) total += v.second;
  if (total <= 0) return 0;
  std::sort(values.begin(), values.end());
  const int64_t lo = (total - 1) / 2;
  const int64_t hi = total / 2;
  double lo_value = 0;
  double hi_value = 0;
  int64_t seen = 0;
  for (const auto& v : values) {
    if (lo >= seen && lo < seen + v.second) lo_value = v.first;
    if (hi >= seen && hi < seen + v.second) {
      hi_value = v.first;
      break;
    }
    seen += v.second;
  }
  return (lo_value + hi_value) / 2;
}

// Length of the union of [start, end) intervals.
double UnionLength(std::vector<std::pair<int64_t, int64_t>> intervals) {
  std::sort(intervals.begin(), intervals.end());
  double total = 0;
  int64_t cur_start = 0;
  int64_t cur_end = 0;
  bool open = false;
  for (const auto& iv : intervals) {
    if (iv.second <= iv.first) continue;
    if (!open || iv.first > cur_end) {
      if (open) total += static_cast<double>(cur_end - cur_start);
      cur_start = iv.first;
      cur_end = iv.second;
      open = true;
    } else {
      cur_end = std::max(cur_end, iv.second);
    }
  }
  if (open) total += static_cast<double>(cur_end - cur_start);
  return total;
}

}  // namespace

std::string KernelCategory(const std::string& kernel_name) {
  const std::string n = Lower(kernel_name);
  // Order matters: fused attention kernels often carry gemm words ("cutlass", "wgmma") in their
  // template arguments, and top-k kernels carry "gather" ("gatherTopK"), so the more specific
  // categories are tested first. docs/profiler.md lists the rules.
  for (const char* key : {"flash", "fmha", "attention", "attn", "sdpa", "softmax"}) {
    if (Contains(n, key)) return "attention";
  }
  for (const char* key : {"mask", "topk", "pool", "block_score", "blockscore"}) {
    if (Contains(n, key)) return "mask";
  }
  if (ContainsWord(n, "arm")) return "mask";
  for (const char* key : {"gather", "scatter", "index", "permute"}) {
    if (Contains(n, key)) return "gather_scatter";
  }
  for (const char* key :
       {"gemm", "gemv", "cutlass", "cublas", "xmma", "matmul", "wgmma", "nvjet", "bmm"}) {
    if (Contains(n, key)) return "gemm";
  }
  return "other";
}

std::string DemangleKernelName(const std::string& name) {
  if (name.rfind("_Z", 0) != 0) return name;
  int status = 0;
  std::unique_ptr<char, void (*)(void*)> out(
      abi::__cxa_demangle(name.c_str(), nullptr, nullptr, &status), std::free);
  if (status != 0 || !out) return name;
  return out.get();
}

double Median(std::vector<double> values) {
  if (values.empty()) return 0;
  const size_t mid = values.size() / 2;
  std::nth_element(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(mid), values.end());
  const double upper = values[mid];
  if (values.size() % 2 == 1) return upper;
  const double lower = *std::max_element(values.begin(),
                                         values.begin() + static_cast<std::ptrdiff_t>(mid));
  return (lower + upper) / 2;
}

namespace {

// Sorted by total time, descending; ties by name so the order is deterministic.
void SortByTotal(std::vector<KernelTime>* rows) {
  std::sort(rows->begin(), rows->end(), [](const KernelTime& a, const KernelTime& b) {
    if (a.total_ns != b.total_ns) return a.total_ns > b.total_ns;
    return a.name < b.name;
  });
}

}  // namespace

std::vector<KernelTime> AggregateKernels(const std::vector<KernelRecord>& records) {
  struct Group {
    std::string category;
    std::vector<double> durations;
  };
  std::map<std::string, Group> groups;
  for (const KernelRecord& r : records) {
    Group& g = groups[r.name];
    if (g.durations.empty()) g.category = r.category;
    g.durations.push_back(static_cast<double>(std::max<int64_t>(0, r.end_ns - r.start_ns)));
  }
  std::vector<KernelTime> rows;
  rows.reserve(groups.size());
  for (auto& [name, g] : groups) {
    KernelTime k;
    k.name = name;
    k.category = g.category;
    k.launches = static_cast<int64_t>(g.durations.size());
    for (double d : g.durations) k.total_ns += d;
    k.mean_ns = k.total_ns / static_cast<double>(k.launches);
    k.min_ns = *std::min_element(g.durations.begin(), g.durations.end());
    k.median_ns = Median(std::move(g.durations));
    rows.push_back(std::move(k));
  }
  SortByTotal(&rows);
  return rows;
}

std::vector<KernelTime> AggregateCategories(const std::vector<KernelTime>& kernels) {
  struct Group {
    KernelTime row;
    std::vector<std::pair<double, int64_t>> medians;
  };
  std::map<std::string, Group> groups;
  for (const KernelTime& k : kernels) {
    Group& g = groups[k.category];
    if (g.medians.empty()) {
      g.row.name = k.category;
      g.row.category = k.category;
      g.row.min_ns = std::numeric_limits<double>::infinity();
    }
    g.row.launches += k.launches;
    g.row.total_ns += k.total_ns;
    g.row.min_ns = std::min(g.row.min_ns, k.min_ns);
    g.medians.emplace_back(k.median_ns, k.launches);
  }
  std::vector<KernelTime> rows;
  rows.reserve(groups.size());
  for (auto& [category, g] : groups) {
    KernelTime row = g.row;
    row.mean_ns = row.launches > 0 ? row.total_ns / static_cast<double>(row.launches) : 0;
    if (row.launches == 0) row.min_ns = 0;
    // The launches' own durations are gone at this level; the launch-weighted median of the
    // kernels' medians stands in for the category median (docs/profiler.md).
    row.median_ns = WeightedMedian(std::move(g.medians));
    rows.push_back(std::move(row));
  }
  SortByTotal(&rows);
  return rows;
}

Measurement SummarizeRecords(const std::string& source, std::vector<KernelRecord> records,
                             int repeats) {
  Measurement m;
  m.source = source;
  std::vector<std::vector<std::pair<int64_t, int64_t>>> intervals(
      static_cast<size_t>(std::max(repeats, 0)));
  for (const KernelRecord& r : records) {
    if (r.repeat >= 0 && r.repeat < repeats) {
      intervals[static_cast<size_t>(r.repeat)].emplace_back(r.start_ns, r.end_ns);
    }
  }
  for (size_t i = 0; i < intervals.size(); ++i) {
    if (intervals[i].empty()) {
      m.warnings.push_back("repeat " + std::to_string(i) + " recorded no activity");
    }
    m.repeat_ns.push_back(UnionLength(std::move(intervals[i])));
  }
  m.median_ns = Median(m.repeat_ns);
  if (!m.repeat_ns.empty() && m.median_ns > 0) {
    const auto [lo, hi] = std::minmax_element(m.repeat_ns.begin(), m.repeat_ns.end());
    m.spread = (*hi - *lo) / m.median_ns;
  }
  m.kernels = AggregateKernels(records);
  m.records = std::move(records);
  return m;
}

}  // namespace sparsetune
