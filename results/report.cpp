#include "results/report.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

namespace sparsetune {

namespace {

// Longest error text shown in a table cell; the JSON output keeps the whole message.
constexpr size_t kErrorWidth = 60;

Json Number(double x) { return std::isfinite(x) ? Json(x) : Json(nullptr); }

bool LooksNumeric(const std::string& cell) {
  if (cell.empty() || cell == "-" || cell == "inf" || cell == "-inf") return true;
  char* end = nullptr;
  std::strtod(cell.c_str(), &end);
  return end != cell.c_str() && *end == '\0';
}

std::string Clip(const std::string& text, size_t width) {
  std::string line = text.substr(0, text.find('\n'));
  if (line.size() <= width) return line;
  return line.substr(0, width - 3) + "...";
}

}  // namespace

std::string FormatNumber(double x, int decimals) {
  if (std::isnan(x)) return "-";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  char text[64];
  std::snprintf(text, sizeof(text), "%.*f", decimals, x);
  return text;
}

std::string FormatTable(const std::vector<std::string>& headers,
                        const std::vector<std::vector<std::string>>& rows) {
  const size_t n = headers.size();
  std::vector<size_t> width(n);
  std::vector<bool> right(n, true);
  for (size_t i = 0; i < n; ++i) width[i] = headers[i].size();
  for (const auto& row : rows) {
    for (size_t i = 0; i < n && i < row.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
      if (!LooksNumeric(row[i])) right[i] = false;
    }
  }
  std::ostringstream out;
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (size_t i = 0; i < n; ++i) {
      const std::string cell = i < cells.size() ? cells[i] : std::string();
      const std::string pad(width[i] - cell.size(), ' ');
      if (i > 0) text += "  ";
      text += right[i] ? pad + cell : cell + pad;
    }
    while (!text.empty() && text.back() == ' ') text.pop_back();
    out << text << "\n";
  };
  line(headers);
  for (const auto& row : rows) line(row);
  return out.str();
}

JobOverview OverviewOfJob(const Store& store, int64_t id) {
  JobOverview s;
  s.job = store.job(id);
  for (const CandidateRecord& c : store.candidates(id)) {
    if (c.state == CandidateState::kComplete) ++s.complete;
    if (c.state == CandidateState::kFail) ++s.failed;
    if (c.state == CandidateState::kRunning) ++s.running;
  }
  s.pareto_size = static_cast<int64_t>(store.pareto(id).size());
  s.best = store.best_feasible(id);
  s.baseline = store.baseline(id);
  return s;
}

Json ToJson(const JobRecord& job) {
  return Json{{"id", job.id},
              {"name", job.name},
              {"state", job.state},
              {"workload", job.workload},
              {"device", job.device},
              {"commit", job.commit},
              {"created", job.created},
              {"objective", job.objective},
              {"constraint", job.constraint},
              {"config", job.config}};
}

Json ToJson(const CandidateRecord& c) {
  Json j = Json{{"job_id", c.job_id},
                {"number", c.number},
                {"generation", c.generation},
                {"state", ToString(c.state)},
                {"origin", c.origin},
                {"genome_hash", c.genome_hash},
                {"genome", c.genome},
                {"parents", c.parents},
                {"started", c.started},
                {"completed", c.completed},
                {"objective", Number(c.objective)},
                {"feasible", c.feasible}};
  Json result = ToJson(c.result);
  result.erase("ok");
  for (auto it = result.begin(); it != result.end(); ++it) j[it.key()] = it.value();
  return j;
}

Json ToJson(const JobOverview& s) {
  return Json{{"job", ToJson(s.job)},
              {"candidates",
               {{"complete", s.complete}, {"failed", s.failed}, {"running", s.running}}},
              {"pareto_size", s.pareto_size},
              {"best_feasible", s.best ? ToJson(*s.best) : Json(nullptr)},
              {"baseline", s.baseline ? ToJson(*s.baseline) : Json(nullptr)}};
}

std::string CandidateTable(const std::vector<CandidateRecord>& candidates) {
  std::vector<std::vector<std::string>> rows;
  for (const CandidateRecord& c : candidates) {
    const EvalResult& r = c.result;
    rows.push_back({std::to_string(c.number), std::to_string(c.generation), ToString(c.state),
                    c.origin, FormatNumber(r.psnr, 2), FormatNumber(r.ssim, 4),
                    FormatNumber(r.speedup, 2), FormatNumber(r.latency_ms, 3),
                    FormatNumber(r.density, 3),
                    c.state == CandidateState::kComplete ? (c.feasible ? "yes" : "no") : "",
                    Clip(r.error, kErrorWidth)});
  }
  return FormatTable({"number", "generation", "state", "origin", "psnr", "ssim", "speedup",
                      "latency ms", "density", "feasible", "error"},
                     rows);
}

std::string JobTable(const std::vector<JobOverview>& jobs) {
  std::vector<std::vector<std::string>> rows;
  for (const JobOverview& s : jobs) {
    rows.push_back({std::to_string(s.job.id), s.job.name, s.job.state, s.job.workload,
                    s.job.objective, std::to_string(s.complete + s.failed + s.running),
                    std::to_string(s.complete), std::to_string(s.failed),
                    s.best ? FormatNumber(s.best->objective, 3) : "-",
                    s.best ? FormatNumber(s.best->result.speedup, 2) : "-", s.job.created});
  }
  return FormatTable({"id", "name", "state", "workload", "objective", "candidates", "complete",
                      "failed", "best", "speedup", "created"},
                     rows);
}

std::string JobDetails(const JobOverview& s) {
  const JobRecord& j = s.job;
  std::ostringstream out;
  out << "job " << j.id << " '" << j.name << "' (" << j.state << ")\n"
      << "  workload    " << j.workload << "\n"
      << "  device      " << j.device << "\n"
      << "  toolkit     " << j.commit << "\n"
      << "  created     " << j.created << "\n"
      << "  objective   " << j.objective << " (maximized), constraint " << j.constraint.dump()
      << "\n";
  if (s.baseline) {
    out << "  dense       " << FormatNumber(s.baseline->latency_ms, 3) << " ms per generation\n";
  }
  out << "  candidates  " << (s.complete + s.failed + s.running) << ": " << s.complete
      << " complete, " << s.failed << " failed, " << s.running << " running; Pareto front "
      << s.pareto_size << "\n";
  if (s.best) {
    const CandidateRecord& b = *s.best;
    out << "  best        #" << b.number << " (generation " << b.generation << ", " << b.origin
        << "): psnr " << FormatNumber(b.result.psnr, 2) << " dB, ssim "
        << FormatNumber(b.result.ssim, 4) << ", speedup " << FormatNumber(b.result.speedup, 2) << "x, latency "
        << FormatNumber(b.result.latency_ms, 3) << " ms, density "
        << FormatNumber(b.result.density, 3) << "\n";
  } else {
    out << "  best        no feasible candidate yet\n";
  }
  return out.str();
}

}  // namespace sparsetune
