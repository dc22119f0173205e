// The three Store backends every contract test runs against, plus helpers to build random
// results and to read a SQLite file directly (as a user of sqlite3 would).
#pragma once

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include <sqlite3.h>

#include "results/store.h"
#include "tests/test_util.h"

namespace sparsetune::test {

enum class Backend { kSqliteFile, kSqliteMemory, kMemory };

inline const std::vector<Backend>& AllBackends() {
  static const std::vector<Backend> all = {Backend::kSqliteFile, Backend::kSqliteMemory,
                                           Backend::kMemory};
  return all;
}

inline const char* Name(Backend b) {
  switch (b) {
    case Backend::kSqliteFile:
      return "sqlite file";
    case Backend::kSqliteMemory:
      return "sqlite :memory:";
    case Backend::kMemory:
      return "memory store";
  }
  return "?";
}

// The file a kSqliteFile backend uses inside `dir`.
inline std::filesystem::path StorePath(const TempDir& dir) { return dir / "store.sqlite"; }

inline std::unique_ptr<Store> Open(Backend b, const TempDir& dir) {
  switch (b) {
    case Backend::kSqliteFile:
      return OpenSqliteStore(StorePath(dir));
    case Backend::kSqliteMemory:
      return OpenSqliteStore(":memory:");
    case Backend::kMemory:
      return MakeMemoryStore();
  }
  return nullptr;
}

inline JobRecord RandomJob(std::mt19937& rng, const std::string& name) {
  std::uniform_real_distribution<double> u(1.0, 3.0);
  JobRecord j;
  j.name = name;
  j.config = Json{{"name", name}, {"search", {{"population", 8}, {"mutation", u(rng)}}}};
  j.workload = "tiny-vdit/cpu-tiny";
  j.device = "cpu: test";
  j.commit = "0.1.0+abc123";
  j.objective = "psnr";
  j.constraint = Json{{"min_speedup", u(rng)}};
  return j;
}

inline EvalResult RandomResult(std::mt19937& rng, int kernels = 2) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  EvalResult r;
  r.ok = true;
  r.psnr = 20.0 + 20.0 * u(rng);
  r.ssim = 0.5 + 0.5 * u(rng);
  r.psnr_heldout = 20.0 + 20.0 * u(rng);
  r.ssim_heldout = 0.5 + 0.5 * u(rng);
  r.latency_ms = 1.0 + 10.0 * u(rng);
  r.dense_latency_ms = 5.0 + 10.0 * u(rng);
  r.speedup = r.dense_latency_ms / r.latency_ms;
  r.density = u(rng);
  r.token_density = u(rng);
  r.latency_spread = 0.1 * u(rng);
  r.latency_source = u(rng) < 0.5 ? "cupti" : "wall_clock";
  for (int i = 0; i < kernels; ++i) {
    KernelTime k;
    k.name = "kernel_" + std::to_string(i) + "_" + std::to_string(rng() % 1000);
    k.category = i % 2 == 0 ? "attention" : "mask";
    k.launches = 1 + static_cast<int64_t>(rng() % 50);
    k.total_ns = 1e6 * (1.0 + u(rng));
    k.mean_ns = k.total_ns / static_cast<double>(k.launches);
    k.min_ns = 0.9 * k.mean_ns;
    k.median_ns = 1.01 * k.mean_ns;
    r.kernels.push_back(k);
  }
  r.extra = Json{{"per_sample_psnr", {u(rng), u(rng)}}};
  return r;
}

// A raw sqlite3 connection to a store file, for checks a user of sqlite3 would make.
class RawDb {
 public:
  explicit RawDb(const std::filesystem::path& path) {
    if (sqlite3_open(path.string().c_str(), &db_) != SQLITE_OK) {
      throw std::runtime_error("cannot open " + path.string());
    }
  }
  ~RawDb() { sqlite3_close(db_); }
  RawDb(const RawDb&) = delete;
  RawDb& operator=(const RawDb&) = delete;

  // Runs SQL; returns SQLite's result code.
  int exec(const std::string& sql) {
    return sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, nullptr);
  }
  // The rows of a query, each column as text ("NULL" for NULL).
  std::vector<std::vector<std::string>> rows(const std::string& sql) {
    std::vector<std::vector<std::string>> out;
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
      throw std::runtime_error(std::string("bad query: ") + sqlite3_errmsg(db_));
    }
    while (sqlite3_step(stmt) == SQLITE_ROW) {
      std::vector<std::string> row;
      for (int i = 0; i < sqlite3_column_count(stmt); ++i) {
        const unsigned char* text = sqlite3_column_text(stmt, i);
        row.push_back(text == nullptr ? "NULL" : reinterpret_cast<const char*>(text));
      }
      out.push_back(row);
    }
    sqlite3_finalize(stmt);
    return out;
  }
  // The value of the first column of the first row as a double (NaN for NULL).
  double number(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    double x = std::nan("");
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW && sqlite3_column_type(stmt, 0) != SQLITE_NULL) {
      x = sqlite3_column_double(stmt, 0);
    }
    sqlite3_finalize(stmt);
    return x;
  }

 private:
  sqlite3* db_ = nullptr;
};

}  // namespace sparsetune::test
