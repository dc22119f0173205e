// End-to-end checks of the `sparsetune` executable as a user runs it: exit codes, one-line errors,
// help and version output.
#include <fstream>
#include <iterator>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/catch.h"
#include "tests/test_util.h"

using sparsetune::test::RunCommand;
using sparsetune::test::TempDir;
using sparsetune::test::WriteText;

namespace {

const std::string kCli = SPARSETUNE_CLI;
const std::string kSource = SPARSETUNE_SOURCE_DIR;

int Lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

}  // namespace

TEST_CASE("--help and --version work", "[cli]") {
  auto help = RunCommand(kCli + " --help");
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("validate") != std::string::npos);
  auto version = RunCommand(kCli + " --version");
  CHECK(version.exit_code == 0);
  CHECK(version.out.find("sparsetune 0.") != std::string::npos);
  CHECK(version.out.find("libtorch: ") != std::string::npos);
  CHECK(version.out.find("CUPTI profiler compiled in: ") != std::string::npos);
  CHECK(version.out.find("CUDA device present: ") != std::string::npos);
  auto sub_help = RunCommand(kCli + " validate --help");
  CHECK(sub_help.exit_code == 0);
  CHECK(sub_help.out.find("--config") != std::string::npos);
}

TEST_CASE("usage errors exit 2", "[cli]") {
  CHECK(RunCommand(kCli + " validate").exit_code == 2);
  CHECK(RunCommand(kCli + " no-such-command").exit_code == 2);
  CHECK(RunCommand(kCli + " --no-such-flag").exit_code == 2);
}

TEST_CASE("validate: missing file and unknown key exit 2 with one line", "[cli]") {
  TempDir dir;
  auto missing = RunCommand(kCli + " validate " + (dir / "missing.json").string());
  CHECK(missing.exit_code == 2);
  CHECK(Lines(missing.err) == 1);
  CHECK(missing.err.find("missing.json: file not found") != std::string::npos);

  WriteText(dir / "typo.json",
            R"({"workload": {"kind": "tiny-vdit", "calibration": [{"class": 0, "seed": 1}]},
                "serach": {}})");
  auto typo = RunCommand(kCli + " validate " + (dir / "typo.json").string());
  CHECK(typo.exit_code == 2);
  CHECK(Lines(typo.err) == 1);
  CHECK(typo.err.find("typo.json: field 'serach': unknown key") != std::string::npos);

  WriteText(dir / "broken.json", "{\"workload\": ");
  auto broken = RunCommand(kCli + " validate " + (dir / "broken.json").string());
  CHECK(broken.exit_code == 2);
  CHECK(broken.err.find("invalid JSON at line 1") != std::string::npos);
}

TEST_CASE("validate accepts the shipped default config", "[cli]") {
  auto ok = RunCommand(kCli + " validate " + kSource + "/configs/default.json");
  CHECK(ok.exit_code == 0);
  CHECK(ok.out.find("valid job config 'default'") != std::string::npos);
}

TEST_CASE("validate checks train configs as train configs", "[cli]") {
  auto ok = RunCommand(kCli + " validate " + kSource + "/configs/train-cpu-tiny.json");
  CHECK(ok.exit_code == 0);
  CHECK(ok.out.find("valid train config 'cpu-tiny' (preset cpu-tiny") != std::string::npos);

  // The shipped config with one field renamed or out of range.
  std::ifstream in(kSource + "/configs/train-cpu-tiny.json");
  const std::string shipped((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto with = [&](const std::string& from, const std::string& to) {
    std::string text = shipped;
    const size_t at = text.find(from);
    REQUIRE(at != std::string::npos);
    return text.replace(at, from.size(), to);
  };
  TempDir dir;
  WriteText(dir / "typo.json", with("\"steps\"", "\"stpes\""));
  auto typo = RunCommand(kCli + " validate " + (dir / "typo.json").string());
  CHECK(typo.exit_code == 2);
  CHECK(Lines(typo.err) == 1);
  CHECK(typo.err.find("typo.json: field 'steps': is required") != std::string::npos);

  WriteText(dir / "zero.json", with("\"batch\": 32", "\"batch\": 0"));
  auto zero = RunCommand(kCli + " validate " + (dir / "zero.json").string());
  CHECK(zero.exit_code == 2);
  CHECK(zero.err.find("zero.json: field 'batch': must be an integer in [1, 4096]") !=
        std::string::npos);
}

TEST_CASE("profile --overhead rejects CPU configs and --trace with one line", "[cli]") {
  auto cpu = RunCommand(kCli + " profile " + kSource + "/configs/default.json --overhead 2");
  CHECK(cpu.exit_code == 2);
  CHECK(Lines(cpu.err) == 1);
  CHECK(cpu.err.find("field 'device.device'") != std::string::npos);
  auto traced = RunCommand(kCli + " profile " + kSource +
                           "/configs/gpu-small.json --overhead 2 --trace t.json");
  CHECK(traced.exit_code == 2);
  CHECK(traced.err.find("--overhead and --trace cannot be combined") != std::string::npos);
  CHECK(RunCommand(kCli + " profile " + kSource + "/configs/gpu-small.json --overhead 0")
            .exit_code == 2);
}

TEST_CASE("bench attention on the CPU: JSON rows, both matmul routines, bad options exit 2",
          "[cli]") {
  const std::string small =
      " bench attention --device cpu --threads 1 --grid 2,8,8 --heads 2 --head-dim 32 --block 16"
      " --repeats 1 --json";
  for (const std::string mm : {"sgemm", "brgemm"}) {
    INFO("--cpu-matmul " << mm);
    auto r = RunCommand(kCli + small + " --cpu-matmul " + mm);
    if (mm == "brgemm" && r.exit_code == 2 &&
        r.err.find("no float32 brgemm API") != std::string::npos)
      continue;  // a libtorch without brgemm: the clear error is the expected behaviour
    REQUIRE(r.exit_code == 0);
    const nlohmann::json j = nlohmann::json::parse(r.out);
    CHECK(j["cpu_matmul"] == mm);
    CHECK(j["threads"] == 1);
    bool saw_dense = false, saw_full_kernel = false;
    for (const auto& row : j["rows"]) {
      const double density = row["density"], ms = row["time_ms"], dense_ms = row["dense_ms"];
      CHECK(density > 0.0);
      CHECK(density <= 1.0);
      CHECK(ms > 0.0);
      CHECK(row["speedup"].get<double>() == Approx(dense_ms / ms).epsilon(1e-9));
      if (row["pattern"] == "dense_sdpa") saw_dense = true;
      if (row["pattern"] == "block_sparse" && row["param"] == 1.0) {
        saw_full_kernel = true;
        CHECK(density == Approx(1.0));
      } else if (row["pattern"] != "dense_sdpa") {
        CHECK(density < 1.0);
      }
    }
    CHECK(saw_dense);
    CHECK(saw_full_kernel);
  }
  auto bad = RunCommand(kCli + small + " --cpu-matmul openblas");
  CHECK(bad.exit_code == 2);
  CHECK(Lines(bad.err) == 1);
  CHECK(bad.err.find("--cpu-matmul must be brgemm or sgemm") != std::string::npos);
  CHECK(RunCommand(kCli + small + " --threads -1").exit_code == 2);
  CHECK(RunCommand(kCli + small + " --dtype bfloat16").exit_code == 2);
}
