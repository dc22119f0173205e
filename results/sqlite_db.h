// Thin RAII layer over the SQLite C API, private to results/: a connection, prepared statements
// with bound parameters (values never go into SQL text), and a transaction that rolls back unless
// committed. Every failure is a StoreError whose message starts with the database path.
//
// Threading: a Database and its statements belong to one thread at a time; nothing here locks.
// Concurrent processes are serialized by SQLite itself (WAL + busy timeout + BEGIN IMMEDIATE).
#pragma once

#include <cstdint>
#include <string>

struct sqlite3;
struct sqlite3_stmt;

namespace sparsetune::sqlite {

class Database {
 public:
  // Opens `path` (":memory:" for a private in-memory database). `create`: create the file when
  // missing. An open failure is a bad-input StoreError "PATH: cannot open results store: ...".
  Database(const std::string& path, bool create);
  ~Database();
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;

  // Runs SQL without parameters or results (schema, pragmas, BEGIN/COMMIT).
  void exec(const std::string& sql);
  // Throws a StoreError naming the path, the SQLite message and `what` (what was being done).
  [[noreturn]] void fail(const std::string& what, bool bad_input = false) const;

  sqlite3* handle() const { return db_; }
  const std::string& path() const { return path_; }

 private:
  sqlite3* db_ = nullptr;
  std::string path_;
};

// One prepared statement. Parameters are numbered from 1 (`?` placeholders), columns from 0.
class Statement {
 public:
  Statement(const Database& db, const char* sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, int64_t value);
  Statement& bind(int index, int value) { return bind(index, static_cast<int64_t>(value)); }
  // NaN is bound as NULL (SQLite has no NaN); ±inf are stored as REAL infinities.
  Statement& bind(int index, double value);
  Statement& bind(int index, const std::string& value);
  Statement& bind(int index, const char* value) { return bind(index, std::string(value)); }
  Statement& bind_null(int index);

  // Advances to the next row; false when done. Throws on error (e.g. a constraint violation).
  bool step();
  // Runs a statement that returns no rows.
  void run();
  // Clears the bindings and rewinds, for running the statement again.
  void reset();

  bool is_null(int column) const;
  int64_t column_int64(int column) const;
  // NULL reads as NaN.
  double column_double(int column) const;
  // NULL reads as "".
  std::string column_text(int column) const;

 private:
  const Database& db_;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE on construction (takes the write lock at once, so two writers never deadlock on
// a lock upgrade); ROLLBACK in the destructor unless commit() ran.
class Transaction {
 public:
  explicit Transaction(Database& db);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  Database& db_;
  bool done_ = false;
};

}  // namespace sparsetune::sqlite
