// The SQLite schema of the results store, version kSchemaVersion (results/store.h). Documented
// for users of sqlite3 and pandas in docs/results-store.md; a change here changes the version,
// adds a migration and updates that page.
#pragma once

namespace sparsetune::schema {

// Tables, indexes, the trigger that keeps finished candidates unmodified, and the views. Run once
// inside the transaction that creates a store; the caller then inserts the schema_version row.
extern const char* const kCreateSql;

// Tables a sparsetune store must have (checked on open).
extern const char* const kRequiredTables[];
extern const int kRequiredTableCount;

}  // namespace sparsetune::schema
