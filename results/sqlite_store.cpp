// The SQLite Store (schema: results/schema.cpp, docs/results-store.md).
//
// Every writing call is one BEGIN IMMEDIATE transaction, committed before it returns; WAL mode
// lets `sparsetune results` read while a job writes. Not thread-safe: one owner thread calls it
// (the connection is opened with SQLITE_OPEN_NOMUTEX); other processes are fine.
#include <cmath>
#include <limits>
#include <map>
#include <set>

#include <sqlite3.h>

#include "results/schema.h"
#include "results/sqlite_db.h"
#include "results/store.h"
#include "results/store_util.h"

namespace sparsetune {

namespace {

using sqlite::Database;
using sqlite::Statement;
using sqlite::Transaction;
using store_util::NoCandidateError;
using store_util::NoJobError;

// How long a writer waits for another process's write lock before giving up.
constexpr int kBusyTimeoutMs = 30000;

// Candidate columns in the order ReadCandidateRow expects.
constexpr const char* kCandidateColumns =
    "job_id, number, generation, state, genome, genome_hash, parents, schedule, origin, started, "
    "completed, objective, feasible";

const char* ValueType(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  return "finite";
}

// Writes one candidate_values row through `insert` (parameters job, number, key, value,
// value_type): non-finite values are NULL with their kind in value_type, as Optuna stores them.
void PutValue(Statement& insert, int64_t job_id, int64_t number, const char* key, double x) {
  insert.bind(1, job_id).bind(2, number).bind(3, key).bind(5, ValueType(x));
  if (std::isfinite(x)) {
    insert.bind(4, x);
  } else {
    insert.bind_null(4);
  }
  insert.run();
  insert.reset();
}

class SqliteStore : public Store {
 public:
  explicit SqliteStore(std::unique_ptr<Database> db) : db_(std::move(db)) {}

  int64_t create_job(const JobRecord& job) override {
    store_util::CheckJobState(job.state, db_->path());
    Transaction tx(*db_);
    Statement insert(*db_,
                     "INSERT INTO jobs (name, config, workload, device, toolkit, created, state, "
                     "objective, constraints) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
    insert.bind(1, job.name)
        .bind(2, job.config.dump())
        .bind(3, job.workload)
        .bind(4, job.device)
        .bind(5, job.commit)
        .bind(6, store_util::NowUtc())
        .bind(7, job.state)
        .bind(8, job.objective)
        .bind(9, job.constraint.dump());
    insert.run();
    const int64_t id = sqlite3_last_insert_rowid(db_->handle());
    tx.commit();
    return id;
  }

  JobRecord job(int64_t id) const override {
    Statement q(*db_,
                "SELECT id, name, config, workload, device, toolkit, created, state, objective, "
                "constraints FROM jobs WHERE id = ?");
    q.bind(1, id);
    if (!q.step()) throw NoJobError(db_->path(), id);
    return ReadJobRow(q);
  }

  std::vector<JobRecord> jobs() const override {
    Statement q(*db_,
                "SELECT id, name, config, workload, device, toolkit, created, state, objective, "
                "constraints FROM jobs ORDER BY id");
    std::vector<JobRecord> out;
    while (q.step()) out.push_back(ReadJobRow(q));
    return out;
  }

  void set_job_state(int64_t id, const std::string& state) override {
    store_util::CheckJobState(state, db_->path());
    Transaction tx(*db_);
    Statement update(*db_, "UPDATE jobs SET state = ? WHERE id = ?");
    update.bind(1, state).bind(2, id);
    update.run();
    if (sqlite3_changes(db_->handle()) == 0) throw NoJobError(db_->path(), id);
    tx.commit();
  }

  int64_t start_candidate(int64_t job_id, int64_t generation, const Json& genome,
                          const std::string& genome_hash, const std::vector<int64_t>& parents,
                          const Json& schedule, const std::string& origin) override {
    Transaction tx(*db_);
    RequireJob(job_id);
    Statement next(*db_, "SELECT COALESCE(MAX(number) + 1, 0) FROM candidates WHERE job_id = ?");
    next.bind(1, job_id);
    next.step();
    const int64_t number = next.column_int64(0);
    Statement insert(*db_,
                     "INSERT INTO candidates (job_id, number, generation, state, genome, "
                     "genome_hash, parents, schedule, origin, started) "
                     "VALUES (?, ?, ?, 'RUNNING', ?, ?, ?, ?, ?, ?)");
    insert.bind(1, job_id)
        .bind(2, number)
        .bind(3, generation)
        .bind(4, genome.dump())
        .bind(5, genome_hash)
        .bind(6, Json(parents).dump())
        .bind(7, schedule.dump())
        .bind(8, origin)
        .bind(9, store_util::NowUtc());
    insert.run();
    tx.commit();
    return number;
  }

  void finish_candidate(int64_t job_id, int64_t number, const EvalResult& result,
                        double objective, bool feasible) override {
    Transaction tx(*db_);
    RequireRunning(job_id, number);
    // A failed candidate has no objective and is never feasible, whatever the caller computed.
    Statement update(*db_,
                     "UPDATE candidates SET state = ?, completed = ?, objective = ?, feasible = ? "
                     "WHERE job_id = ? AND number = ?");
    update.bind(1, result.ok ? "COMPLETE" : "FAIL")
        .bind(2, store_util::NowUtc())
        .bind(3, result.ok ? objective : EvalResult::kNaN)
        .bind(4, (result.ok && feasible) ? 1 : 0)
        .bind(5, job_id)
        .bind(6, number);
    update.run();

    Statement value(*db_,
                    "INSERT INTO candidate_values (job_id, number, key, value, value_type) "
                    "VALUES (?, ?, ?, ?, ?)");
    for (const store_util::MetricField& f : store_util::MetricFields()) {
      PutValue(value, job_id, number, f.key, result.*f.field);
    }

    if (!result.kernels.empty()) {
      Statement kernel(*db_,
                       "INSERT INTO kernel_measurements (job_id, number, kernel, category, "
                       "launches, total_ns, mean_ns, min_ns, median_ns, device) "
                       "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, device FROM jobs WHERE id = ?");
      for (const KernelTime& k : result.kernels) {
        kernel.bind(1, job_id)
            .bind(2, number)
            .bind(3, k.name)
            .bind(4, k.category)
            .bind(5, k.launches)
            .bind(6, k.total_ns)
            .bind(7, k.mean_ns)
            .bind(8, k.min_ns)
            .bind(9, k.median_ns)
            .bind(10, job_id);
        kernel.run();
        kernel.reset();
      }
    }

    if (!result.error.empty()) PutAttribute(job_id, number, "error", Json(result.error));
    if (!result.latency_source.empty()) {
      PutAttribute(job_id, number, "latency_source", Json(result.latency_source));
    }
    if (!(result.extra.is_object() && result.extra.empty())) {
      PutAttribute(job_id, number, "extra", result.extra);
    }
    tx.commit();
  }

  int64_t fail_running(int64_t job_id, const std::string& reason) override {
    Transaction tx(*db_);
    RequireJob(job_id);
    std::vector<int64_t> numbers;
    {
      Statement q(*db_,
                  "SELECT number FROM candidates WHERE job_id = ? AND state = 'RUNNING' "
                  "ORDER BY number");
      q.bind(1, job_id);
      while (q.step()) numbers.push_back(q.column_int64(0));
    }
    Statement update(*db_,
                     "UPDATE candidates SET state = 'FAIL', completed = ?, objective = NULL, "
                     "feasible = 0 WHERE job_id = ? AND number = ?");
    for (int64_t number : numbers) {
      update.bind(1, store_util::NowUtc()).bind(2, job_id).bind(3, number);
      update.run();
      update.reset();
      PutAttribute(job_id, number, "error", Json(reason));
    }
    tx.commit();
    return static_cast<int64_t>(numbers.size());
  }

  std::vector<CandidateRecord> candidates(int64_t job_id) const override {
    RequireJob(job_id);
    Statement q(*db_, (std::string("SELECT ") + kCandidateColumns +
                       " FROM candidates WHERE job_id = ? ORDER BY number")
                          .c_str());
    q.bind(1, job_id);
    std::vector<CandidateRecord> out;
    while (q.step()) out.push_back(ReadCandidateRow(q));
    LoadDetails(job_id, &out);
    return out;
  }

  std::optional<CandidateRecord> candidate(int64_t job_id, int64_t number) const override {
    Statement q(*db_, (std::string("SELECT ") + kCandidateColumns +
                       " FROM candidates WHERE job_id = ? AND number = ?")
                          .c_str());
    q.bind(1, job_id).bind(2, number);
    return ReadOne(q, job_id);
  }

  std::optional<CandidateRecord> find_complete(int64_t job_id,
                                               const std::string& genome_hash) const override {
    Statement q(*db_, (std::string("SELECT ") + kCandidateColumns +
                       " FROM candidates WHERE job_id = ? AND genome_hash = ? AND "
                       "state = 'COMPLETE' ORDER BY number LIMIT 1")
                          .c_str());
    q.bind(1, job_id).bind(2, genome_hash);
    return ReadOne(q, job_id);
  }

  void save_baseline(int64_t job_id, const EvalResult& dense) override {
    Transaction tx(*db_);
    RequireJob(job_id);
    Statement upsert(*db_,
                     "INSERT INTO baselines (job_id, result, dense_latency_ms, device, created) "
                     "SELECT ?, ?, ?, device, ? FROM jobs WHERE id = ? "
                     "ON CONFLICT (job_id) DO UPDATE SET result = excluded.result, "
                     "dense_latency_ms = excluded.dense_latency_ms, created = excluded.created");
    upsert.bind(1, job_id)
        .bind(2, ToJson(dense).dump())
        .bind(3, dense.latency_ms)
        .bind(4, store_util::NowUtc())
        .bind(5, job_id);
    upsert.run();
    tx.commit();
  }

  std::optional<EvalResult> baseline(int64_t job_id) const override {
    Statement q(*db_, "SELECT result FROM baselines WHERE job_id = ?");
    q.bind(1, job_id);
    if (!q.step()) return std::nullopt;
    return EvalResultFromJson(ParseStored(q.column_text(0), "baselines.result"));
  }

  void record_heldout(int64_t job_id, int64_t number, double psnr_heldout,
                      double ssim_heldout) override {
    Transaction tx(*db_);
    Statement state(*db_, "SELECT state FROM candidates WHERE job_id = ? AND number = ?");
    state.bind(1, job_id).bind(2, number);
    if (!state.step()) throw NoCandidateError(db_->path(), job_id, number);
    if (state.column_text(0) != "COMPLETE") {
      throw StoreError(db_->path() + ": candidate " + std::to_string(number) + " of job " +
                           std::to_string(job_id) + " is not COMPLETE",
                       true);
    }
    Statement upsert(*db_,
                     "INSERT INTO candidate_values (job_id, number, key, value, value_type) "
                     "VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id, number, key) DO UPDATE SET "
                     "value = excluded.value, value_type = excluded.value_type");
    const std::pair<const char*, double> values[] = {{"psnr_heldout", psnr_heldout},
                                                     {"ssim_heldout", ssim_heldout}};
    for (const auto& [key, x] : values) PutValue(upsert, job_id, number, key, x);
    tx.commit();
  }

  void record_export(int64_t job_id, int64_t number, const std::string& path,
                     const Json& schedule) override {
    Transaction tx(*db_);
    Statement exists(*db_, "SELECT 1 FROM candidates WHERE job_id = ? AND number = ?");
    exists.bind(1, job_id).bind(2, number);
    if (!exists.step()) throw NoCandidateError(db_->path(), job_id, number);
    Statement insert(*db_,
                     "INSERT INTO schedules (job_id, number, path, schedule, created) "
                     "VALUES (?, ?, ?, ?, ?)");
    insert.bind(1, job_id)
        .bind(2, number)
        .bind(3, path)
        .bind(4, schedule.dump())
        .bind(5, store_util::NowUtc());
    insert.run();
    tx.commit();
  }

  std::vector<CandidateRecord> pareto(int64_t job_id) const override {
    return FromView("SELECT number FROM pareto WHERE job_id = ? ORDER BY speedup, number",
                    job_id);
  }

  std::optional<CandidateRecord> best_feasible(int64_t job_id) const override {
    std::vector<CandidateRecord> best =
        FromView("SELECT number FROM best_feasible WHERE job_id = ?", job_id);
    if (best.empty()) return std::nullopt;
    return best.front();
  }

 private:
  Json ParseStored(const std::string& text, const char* column) const {
    try {
      return Json::parse(text);
    } catch (const Json::exception&) {
      throw StoreError(db_->path() + ": column " + column + " holds invalid JSON", false);
    }
  }

  void RequireJob(int64_t job_id) const {
    Statement q(*db_, "SELECT 1 FROM jobs WHERE id = ?");
    q.bind(1, job_id);
    if (!q.step()) throw NoJobError(db_->path(), job_id);
  }

  void RequireRunning(int64_t job_id, int64_t number) const {
    Statement q(*db_, "SELECT state FROM candidates WHERE job_id = ? AND number = ?");
    q.bind(1, job_id).bind(2, number);
    if (!q.step()) throw NoCandidateError(db_->path(), job_id, number);
    const CandidateState state = store_util::ParseCandidateState(q.column_text(0), db_->path());
    if (state != CandidateState::kRunning) {
      throw store_util::NotRunningError(db_->path(), job_id, number, state);
    }
  }

  void PutAttribute(int64_t job_id, int64_t number, const char* key, const Json& value) {
    Statement insert(*db_,
                     "INSERT INTO candidate_attributes (job_id, number, key, value) "
                     "VALUES (?, ?, ?, ?) ON CONFLICT (job_id, number, key) "
                     "DO UPDATE SET value = excluded.value");
    insert.bind(1, job_id).bind(2, number).bind(3, key).bind(4, value.dump());
    insert.run();
  }

  JobRecord ReadJobRow(const Statement& q) const {
    JobRecord j;
    j.id = q.column_int64(0);
    j.name = q.column_text(1);
    j.config = ParseStored(q.column_text(2), "jobs.config");
    j.workload = q.column_text(3);
    j.device = q.column_text(4);
    j.commit = q.column_text(5);
    j.created = q.column_text(6);
    j.state = q.column_text(7);
    j.objective = q.column_text(8);
    j.constraint = ParseStored(q.column_text(9), "jobs.constraints");
    return j;
  }

  CandidateRecord ReadCandidateRow(const Statement& q) const {
    CandidateRecord c;
    c.job_id = q.column_int64(0);
    c.number = q.column_int64(1);
    c.generation = q.column_int64(2);
    c.state = store_util::ParseCandidateState(q.column_text(3), db_->path());
    c.genome = ParseStored(q.column_text(4), "candidates.genome");
    c.genome_hash = q.column_text(5);
    const Json parents = ParseStored(q.column_text(6), "candidates.parents");
    if (!parents.is_array()) {
      throw StoreError(db_->path() + ": column candidates.parents is not a JSON array", false);
    }
    for (const Json& p : parents) c.parents.push_back(p.get<int64_t>());
    c.schedule = ParseStored(q.column_text(7), "candidates.schedule");
    c.origin = q.column_text(8);
    c.started = q.column_text(9);
    c.completed = q.column_text(10);
    c.objective = q.column_double(11);
    c.feasible = q.column_int64(12) != 0;
    c.result.ok = c.state == CandidateState::kComplete;
    return c;
  }

  std::optional<CandidateRecord> ReadOne(Statement& q, int64_t job_id) const {
    if (!q.step()) return std::nullopt;
    std::vector<CandidateRecord> one{ReadCandidateRow(q)};
    LoadDetails(job_id, &one, one.front().number);
    return one.front();
  }

  // Fills result metrics, attributes and kernels of `candidates` (all of job `job_id`, or only
  // candidate `only` when given) with one query per table.
  void LoadDetails(int64_t job_id, std::vector<CandidateRecord>* candidates,
                   std::optional<int64_t> only = std::nullopt) const {
    std::map<int64_t, CandidateRecord*> by_number;
    for (CandidateRecord& c : *candidates) by_number[c.number] = &c;
    const std::string filter = only ? " WHERE job_id = ? AND number = ?" : " WHERE job_id = ?";
    auto bind = [&](Statement& q) {
      q.bind(1, job_id);
      if (only) q.bind(2, *only);
    };

    Statement values(*db_, ("SELECT number, key, value, value_type FROM candidate_values" +
                            filter).c_str());
    bind(values);
    while (values.step()) {
      auto it = by_number.find(values.column_int64(0));
      if (it == by_number.end()) continue;
      const std::string key = values.column_text(1);
      const std::string type = values.column_text(3);
      double x = EvalResult::kNaN;
      if (type == "finite") x = values.column_double(2);
      if (type == "inf") x = std::numeric_limits<double>::infinity();
      if (type == "-inf") x = -std::numeric_limits<double>::infinity();
      for (const store_util::MetricField& f : store_util::MetricFields()) {
        if (key == f.key) it->second->result.*f.field = x;
      }
    }

    Statement attributes(*db_, ("SELECT number, key, value FROM candidate_attributes" +
                                filter).c_str());
    bind(attributes);
    while (attributes.step()) {
      auto it = by_number.find(attributes.column_int64(0));
      if (it == by_number.end()) continue;
      const std::string key = attributes.column_text(1);
      const Json value = ParseStored(attributes.column_text(2), "candidate_attributes.value");
      EvalResult& r = it->second->result;
      if (key == "error" && value.is_string()) r.error = value.get<std::string>();
      if (key == "latency_source" && value.is_string()) {
        r.latency_source = value.get<std::string>();
      }
      if (key == "extra") r.extra = value;
    }

    Statement kernels(*db_, ("SELECT number, kernel, category, launches, total_ns, mean_ns, "
                             "min_ns, median_ns FROM kernel_measurements" +
                             filter + " ORDER BY rowid").c_str());
    bind(kernels);
    while (kernels.step()) {
      auto it = by_number.find(kernels.column_int64(0));
      if (it == by_number.end()) continue;
      KernelTime k;
      k.name = kernels.column_text(1);
      k.category = kernels.column_text(2);
      k.launches = kernels.column_int64(3);
      k.total_ns = kernels.column_double(4);
      k.mean_ns = kernels.column_double(5);
      k.min_ns = kernels.column_double(6);
      k.median_ns = kernels.column_double(7);
      it->second->result.kernels.push_back(k);
    }
  }

  // The candidates a view lists for the job, in the view query's order.
  std::vector<CandidateRecord> FromView(const char* sql, int64_t job_id) const {
    std::vector<CandidateRecord> all = candidates(job_id);
    std::map<int64_t, const CandidateRecord*> by_number;
    for (const CandidateRecord& c : all) by_number[c.number] = &c;
    Statement q(*db_, sql);
    q.bind(1, job_id);
    std::vector<CandidateRecord> out;
    while (q.step()) out.push_back(*by_number.at(q.column_int64(0)));
    return out;
  }

  std::unique_ptr<Database> db_;
};

// Names of the tables in the database. A file that is not SQLite fails here: the first read of
// the file is where SQLite notices.
std::set<std::string> TableNames(const Database& db) {
  std::set<std::string> names;
  try {
    Statement q(db, "SELECT name FROM sqlite_master WHERE type = 'table'");
    while (q.step()) names.insert(q.column_text(0));
  } catch (const StoreError&) {
    throw StoreError(db.path() + ": not a sparsetune results store (" +
                         sqlite3_errmsg(db.handle()) + ")",
                     true);
  }
  return names;
}

void CheckSchema(const Database& db, const std::set<std::string>& tables) {
  if (tables.count("schema_version") == 0) {
    throw StoreError(db.path() + ": not a sparsetune results store (no schema_version table)",
                     true);
  }
  Statement q(db, "SELECT MAX(version) FROM schema_version");
  if (!q.step() || q.is_null(0)) {
    throw StoreError(db.path() + ": not a sparsetune results store (schema_version is empty)",
                     true);
  }
  const int64_t version = q.column_int64(0);
  if (version > kSchemaVersion) {
    throw StoreError(db.path() + ": written by a newer sparsetune (schema " +
                         std::to_string(version) + "); this build reads schema " +
                         std::to_string(kSchemaVersion),
                     true);
  }
  if (version < kSchemaVersion) {
    throw StoreError(db.path() + ": unsupported results store schema " + std::to_string(version) +
                         " (this build reads schema " + std::to_string(kSchemaVersion) + ")",
                     true);
  }
  for (int i = 0; i < schema::kRequiredTableCount; ++i) {
    if (tables.count(schema::kRequiredTables[i]) == 0) {
      throw StoreError(db.path() + ": not a sparsetune results store (no table " +
                           schema::kRequiredTables[i] + ")",
                       true);
    }
  }
}

std::unique_ptr<Store> Open(const std::filesystem::path& path, bool create) {
  const std::string name = path.string();
  const bool in_memory = name == ":memory:";
  auto db = std::make_unique<Database>(name, create);
  sqlite3_busy_timeout(db->handle(), kBusyTimeoutMs);
  db->exec("PRAGMA foreign_keys = ON");

  std::set<std::string> tables = TableNames(*db);
  if (tables.empty()) {
    if (!create) {
      throw StoreError(name + ": not a sparsetune results store (it has no tables)", true);
    }
    Transaction tx(*db);
    // Another process may have created the schema while this one waited for the write lock.
    if (TableNames(*db).empty()) {
      db->exec(schema::kCreateSql);
      Statement version(*db, "INSERT INTO schema_version (version) VALUES (?)");
      version.bind(1, kSchemaVersion);
      version.run();
    }
    tx.commit();
    tables = TableNames(*db);
  }
  CheckSchema(*db, tables);
  // WAL lets readers (`sparsetune results`) run while a job writes. The mode is stored in the file
  // and can only change outside a transaction; ":memory:" databases have no journal file.
  if (!in_memory) {
    Statement wal(*db, "PRAGMA journal_mode = WAL");
    wal.run();
  }
  return std::make_unique<SqliteStore>(std::move(db));
}

}  // namespace

std::unique_ptr<Store> OpenSqliteStore(const std::filesystem::path& path) {
  return Open(path, true);
}

std::unique_ptr<Store> OpenExistingSqliteStore(const std::filesystem::path& path) {
  std::error_code ec;
  if (path != ":memory:" && !std::filesystem::exists(path, ec)) {
    throw StoreError(
        path.string() + ": no results store here (run `sparsetune run` first or pass --db)",
        true);
  }
  return Open(path, false);
}

}  // namespace sparsetune
