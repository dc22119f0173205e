#include "results/schema.h"

namespace sparsetune::schema {

// Non-finite metric values follow Optuna: `value` is NULL and `value_type` says which of
// +inf / -inf / NaN it was. The views turn them back into SQL numbers (9e999 reads as +inf in
// SQLite) or NULL for NaN, so pandas sees inf and NaN.
const char* const kCreateSql = R"sql(
CREATE TABLE schema_version (
  version INTEGER NOT NULL
);

CREATE TABLE jobs (
  id          INTEGER PRIMARY KEY,
  name        TEXT NOT NULL,
  config      TEXT NOT NULL,
  workload    TEXT NOT NULL,
  device      TEXT NOT NULL,
  toolkit     TEXT NOT NULL,
  created     TEXT NOT NULL,
  state       TEXT NOT NULL CHECK (state IN ('RUNNING', 'COMPLETE', 'INTERRUPTED')),
  objective   TEXT NOT NULL,
  constraints TEXT NOT NULL
);

CREATE TABLE candidates (
  job_id      INTEGER NOT NULL REFERENCES jobs(id),
  number      INTEGER NOT NULL,
  generation  INTEGER NOT NULL,
  state       TEXT NOT NULL CHECK (state IN ('RUNNING', 'COMPLETE', 'FAIL')),
  genome      TEXT NOT NULL,
  genome_hash TEXT NOT NULL,
  parents     TEXT NOT NULL,
  schedule    TEXT NOT NULL,
  origin      TEXT NOT NULL,
  started     TEXT NOT NULL,
  completed   TEXT,
  objective   REAL,
  feasible    INTEGER NOT NULL DEFAULT 0 CHECK (feasible IN (0, 1)),
  PRIMARY KEY (job_id, number)
);
CREATE INDEX candidates_by_genome_hash ON candidates(job_id, genome_hash);

CREATE TRIGGER candidates_finished_are_final BEFORE UPDATE ON candidates
WHEN OLD.state <> 'RUNNING'
BEGIN
  SELECT RAISE(ABORT, 'finished candidates are never modified');
END;

CREATE TABLE candidate_values (
  job_id     INTEGER NOT NULL,
  number     INTEGER NOT NULL,
  key        TEXT NOT NULL,
  value      REAL,
  value_type TEXT NOT NULL CHECK (value_type IN ('finite', 'inf', '-inf', 'nan')),
  PRIMARY KEY (job_id, number, key),
  FOREIGN KEY (job_id, number) REFERENCES candidates(job_id, number)
);

CREATE TABLE kernel_measurements (
  job_id    INTEGER NOT NULL,
  number    INTEGER NOT NULL,
  kernel    TEXT NOT NULL,
  category  TEXT NOT NULL,
  launches  INTEGER NOT NULL,
  total_ns  REAL,
  mean_ns   REAL,
  min_ns    REAL,
  median_ns REAL,
  device    TEXT NOT NULL,
  FOREIGN KEY (job_id, number) REFERENCES candidates(job_id, number)
);
CREATE INDEX kernel_measurements_by_candidate ON kernel_measurements(job_id, number);

CREATE TABLE candidate_attributes (
  job_id INTEGER NOT NULL,
  number INTEGER NOT NULL,
  key    TEXT NOT NULL,
  value  TEXT NOT NULL,
  PRIMARY KEY (job_id, number, key),
  FOREIGN KEY (job_id, number) REFERENCES candidates(job_id, number)
);

CREATE TABLE baselines (
  job_id           INTEGER PRIMARY KEY REFERENCES jobs(id),
  result           TEXT NOT NULL,
  dense_latency_ms REAL,
  device           TEXT NOT NULL,
  created          TEXT NOT NULL
);

CREATE TABLE schedules (
  id       INTEGER PRIMARY KEY,
  job_id   INTEGER NOT NULL,
  number   INTEGER NOT NULL,
  path     TEXT NOT NULL,
  schedule TEXT NOT NULL,
  created  TEXT NOT NULL,
  FOREIGN KEY (job_id, number) REFERENCES candidates(job_id, number)
);

CREATE VIEW candidate_scores AS
SELECT c.job_id, c.number, c.state, c.objective, c.feasible,
       CASE v.value_type WHEN 'finite' THEN v.value WHEN 'inf' THEN 9e999
                         WHEN '-inf' THEN -9e999 END AS speedup
FROM candidates c
LEFT JOIN candidate_values v
  ON v.job_id = c.job_id AND v.number = c.number AND v.key = 'speedup';

CREATE VIEW candidate_summary AS
SELECT c.job_id, c.number, c.generation, c.state, c.origin, c.objective, c.feasible,
       MAX(CASE WHEN v.key = 'psnr' THEN v.value END) AS psnr,
       MAX(CASE WHEN v.key = 'ssim' THEN v.value END) AS ssim,
       MAX(CASE WHEN v.key = 'psnr_heldout' THEN v.value END) AS psnr_heldout,
       MAX(CASE WHEN v.key = 'ssim_heldout' THEN v.value END) AS ssim_heldout,
       MAX(CASE WHEN v.key = 'latency_ms' THEN v.value END) AS latency_ms,
       MAX(CASE WHEN v.key = 'dense_latency_ms' THEN v.value END) AS dense_latency_ms,
       MAX(CASE WHEN v.key = 'speedup' THEN v.value END) AS speedup,
       MAX(CASE WHEN v.key = 'density' THEN v.value END) AS density,
       MAX(CASE WHEN v.key = 'token_density' THEN v.value END) AS token_density,
       MAX(CASE WHEN v.key = 'latency_spread' THEN v.value END) AS latency_spread,
       (SELECT json_extract(a.value, '$') FROM candidate_attributes a
        WHERE a.job_id = c.job_id AND a.number = c.number AND a.key = 'error') AS error,
       c.genome_hash, c.started, c.completed
FROM candidates c
LEFT JOIN (SELECT job_id, number, key,
                  CASE value_type WHEN 'finite' THEN value WHEN 'inf' THEN 9e999
                                  WHEN '-inf' THEN -9e999 END AS value
           FROM candidate_values) v
  ON v.job_id = c.job_id AND v.number = c.number
GROUP BY c.job_id, c.number;

CREATE VIEW pareto AS
SELECT s.* FROM candidate_summary s
WHERE s.state = 'COMPLETE' AND s.objective IS NOT NULL AND s.speedup IS NOT NULL
  AND NOT EXISTS (
    SELECT 1 FROM candidate_scores o
    WHERE o.job_id = s.job_id AND o.state = 'COMPLETE'
      AND o.objective IS NOT NULL AND o.speedup IS NOT NULL
      AND o.objective >= s.objective AND o.speedup >= s.speedup
      AND (o.objective > s.objective OR o.speedup > s.speedup));

CREATE VIEW best_feasible AS
SELECT s.* FROM candidate_summary s
JOIN (SELECT job_id, number,
             ROW_NUMBER() OVER (PARTITION BY job_id
                                ORDER BY objective DESC, speedup DESC, number ASC) AS place
      FROM candidate_scores
      WHERE state = 'COMPLETE' AND feasible = 1 AND objective IS NOT NULL) b
  ON b.job_id = s.job_id AND b.number = s.number
WHERE b.place = 1;
)sql";

const char* const kRequiredTables[] = {"schema_version",      "jobs",
                                       "candidates",          "candidate_values",
                                       "kernel_measurements", "candidate_attributes",
                                       "baselines",           "schedules"};
const int kRequiredTableCount = sizeof(kRequiredTables) / sizeof(kRequiredTables[0]);

}  // namespace sparsetune::schema
