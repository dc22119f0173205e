// The in-memory Store: the same semantics as the SQLite store in plain C++, for tests and dry
// runs. Not thread-safe, like the SQLite store: one owner calls it.
#include <cmath>
#include <map>

#include "results/store.h"
#include "results/store_util.h"

namespace sparsetune {

namespace {

using store_util::NoCandidateError;
using store_util::NoJobError;

constexpr const char* kSource = "memory store";

class MemoryStore : public Store {
 public:
  int64_t create_job(const JobRecord& job) override {
    store_util::CheckJobState(job.state, kSource);
    JobRecord stored = job;
    stored.id = next_job_id_++;
    stored.created = store_util::NowUtc();
    jobs_[stored.id].job = stored;
    return stored.id;
  }

  JobRecord job(int64_t id) const override { return entry(id).job; }

  std::vector<JobRecord> jobs() const override {
    std::vector<JobRecord> out;
    for (const auto& [id, e] : jobs_) out.push_back(e.job);
    return out;
  }

  void set_job_state(int64_t id, const std::string& state) override {
    store_util::CheckJobState(state, kSource);
    entry(id).job.state = state;
  }

  int64_t start_candidate(int64_t job_id, int64_t generation, const Json& genome,
                          const std::string& genome_hash, const std::vector<int64_t>& parents,
                          const Json& schedule, const std::string& origin) override {
    Entry& e = entry(job_id);
    CandidateRecord c;
    c.job_id = job_id;
    c.number = static_cast<int64_t>(e.candidates.size());
    c.generation = generation;
    c.state = CandidateState::kRunning;
    c.genome = genome;
    c.genome_hash = genome_hash;
    c.parents = parents;
    c.schedule = schedule;
    c.origin = origin;
    c.started = store_util::NowUtc();
    e.candidates.push_back(c);
    return c.number;
  }

  void finish_candidate(int64_t job_id, int64_t number, const EvalResult& result,
                        double objective, bool feasible) override {
    CandidateRecord& c = running(job_id, number);
    c.state = result.ok ? CandidateState::kComplete : CandidateState::kFail;
    c.completed = store_util::NowUtc();
    c.result = result;
    // A failed candidate has no objective and is never feasible, whatever the caller computed.
    c.objective = result.ok ? objective : EvalResult::kNaN;
    c.feasible = result.ok && feasible;
  }

  int64_t fail_running(int64_t job_id, const std::string& reason) override {
    int64_t count = 0;
    for (CandidateRecord& c : entry(job_id).candidates) {
      if (c.state != CandidateState::kRunning) continue;
      c.state = CandidateState::kFail;
      c.completed = store_util::NowUtc();
      c.result = EvalResult{};
      c.result.error = reason;
      c.objective = EvalResult::kNaN;
      c.feasible = false;
      ++count;
    }
    return count;
  }

  std::vector<CandidateRecord> candidates(int64_t job_id) const override {
    return entry(job_id).candidates;
  }

  std::optional<CandidateRecord> candidate(int64_t job_id, int64_t number) const override {
    auto it = jobs_.find(job_id);
    if (it == jobs_.end() || number < 0 ||
        number >= static_cast<int64_t>(it->second.candidates.size())) {
      return std::nullopt;
    }
    return it->second.candidates[static_cast<size_t>(number)];
  }

  std::optional<CandidateRecord> find_complete(int64_t job_id,
                                               const std::string& genome_hash) const override {
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return std::nullopt;
    for (const CandidateRecord& c : it->second.candidates) {
      if (c.state == CandidateState::kComplete && c.genome_hash == genome_hash) return c;
    }
    return std::nullopt;
  }

  void save_baseline(int64_t job_id, const EvalResult& dense) override {
    // Stored through its JSON form so the memory store keeps exactly what the SQLite store keeps.
    entry(job_id).baseline = EvalResultFromJson(ToJson(dense));
  }

  std::optional<EvalResult> baseline(int64_t job_id) const override {
    auto it = jobs_.find(job_id);
    if (it == jobs_.end()) return std::nullopt;
    return it->second.baseline;
  }

  void record_heldout(int64_t job_id, int64_t number, double psnr_heldout,
                      double ssim_heldout) override {
    auto c = candidate(job_id, number);
    if (!c) throw NoCandidateError(kSource, job_id, number);
    if (c->state != CandidateState::kComplete) {
      throw StoreError(std::string(kSource) + ": candidate " + std::to_string(number) + " of job " +
                           std::to_string(job_id) + " is not COMPLETE",
                       true);
    }
    CandidateRecord& stored = entry(job_id).candidates[static_cast<size_t>(number)];
    stored.result.psnr_heldout = psnr_heldout;
    stored.result.ssim_heldout = ssim_heldout;
  }

  void record_export(int64_t job_id, int64_t number, const std::string& path,
                     const Json& schedule) override {
    if (!candidate(job_id, number)) throw NoCandidateError(kSource, job_id, number);
    entry(job_id).exports.push_back(Export{number, path, schedule, store_util::NowUtc()});
  }

 private:
  struct Export {
    int64_t number;
    std::string path;
    Json schedule;
    std::string created;
  };
  struct Entry {
    JobRecord job;
    std::vector<CandidateRecord> candidates;  // index == number
    std::optional<EvalResult> baseline;
    std::vector<Export> exports;
  };

  Entry& entry(int64_t id) {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) throw NoJobError(kSource, id);
    return it->second;
  }
  const Entry& entry(int64_t id) const {
    auto it = jobs_.find(id);
    if (it == jobs_.end()) throw NoJobError(kSource, id);
    return it->second;
  }
  CandidateRecord& running(int64_t job_id, int64_t number) {
    Entry& e = entry(job_id);
    if (number < 0 || number >= static_cast<int64_t>(e.candidates.size())) {
      throw NoCandidateError(kSource, job_id, number);
    }
    CandidateRecord& c = e.candidates[static_cast<size_t>(number)];
    if (c.state != CandidateState::kRunning) {
      throw store_util::NotRunningError(kSource, job_id, number, c.state);
    }
    return c;
  }

  std::map<int64_t, Entry> jobs_;
  int64_t next_job_id_ = 1;
};

}  // namespace

std::unique_ptr<Store> MakeMemoryStore() { return std::make_unique<MemoryStore>(); }

}  // namespace sparsetune
