// The CUPTI session and profiler on the CPU: a FakeCuptiApi writes real CUPTI activity records
// into the buffers the session hands out, so the trampolines, buffer bookkeeping and parsing
// run exactly as they would on a GPU. Built only with SPARSETUNE_WITH_CUPTI (needs cupti.h).
#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <stdexcept>
#include <type_traits>

#include "core/error.h"
#include "profiler/cupti_profiler.h"
#include "profiler/cupti_session.h"
#include "tests/catch.h"
#include "tests/profiler/fake_cupti_api.h"

namespace sparsetune {
namespace {

using test::FakeCuptiApi;

std::string Enable(CUpti_ActivityKind kind) { return "enable " + std::to_string(kind); }
std::string Disable(CUpti_ActivityKind kind) { return "disable " + std::to_string(kind); }
const std::string kForcedFlush = "flush " + std::to_string(CUPTI_ACTIVITY_FLAG_FLUSH_FORCED);

// Mangled names as nvcc emits them, with their demangled forms.
const char* kFlashMangled = "_Z16flash_fwd_kernelPKfS0_S0_Pfi";
const char* kFlashDemangled = "flash_fwd_kernel(float const*, float const*, float const*, float*, int)";
const char* kGemmMangled = "_Z11gemm_kernelPKfS0_Pfiii";
const char* kGemmDemangled = "gemm_kernel(float const*, float const*, float*, int, int, int)";

}  // namespace

TEST_CASE("ActivityBuffer is move-only, owning and 8-byte aligned", "[profiler]") {
  static_assert(!std::is_copy_constructible<ActivityBuffer>::value, "move-only");
  static_assert(!std::is_copy_assignable<ActivityBuffer>::value, "move-only");
  static_assert(std::is_nothrow_move_constructible<ActivityBuffer>::value, "cheap moves");
  static_assert(!std::is_move_constructible<CuptiSession>::value,
                "the callbacks hold the session's address");
  ActivityBuffer a(1001);
  REQUIRE(a.data() != nullptr);
  CHECK(a.size() == 1008);
  CHECK(std::all_of(a.data(), a.data() + a.size(), [](uint8_t v) { return v == 0; }));
  CHECK(reinterpret_cast<uintptr_t>(a.data()) % 8 == 0);
  uint8_t* p = a.data();
  ActivityBuffer b(std::move(a));
  CHECK(b.data() == p);
  CHECK(a.data() == nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  ActivityBuffer c;
  c = std::move(b);
  CHECK(c.data() == p);
  CHECK(b.data() == nullptr);  // NOLINT(bugprone-use-after-move)
}

TEST_CASE("CuptiSession enables on start, flushes and disables on stop", "[profiler]") {
  FakeCuptiApi api;
  {
    CuptiSession session(api);
    CHECK(session.running());
    const std::vector<std::string> started = {"zeroed 1", "register",
                                              Enable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL),
                                              Enable(CUPTI_ACTIVITY_KIND_MEMCPY),
                                              Enable(CUPTI_ACTIVITY_KIND_MEMSET)};
    CHECK(api.calls == started);
    // One session per process: CUPTI's callbacks are global.
    REQUIRE_THROWS_WITH(CuptiSession(api),
                        "CUPTI: another profiling session is active (one at a time per process)");
    api.calls.clear();
    session.stop();
    CHECK_FALSE(session.running());
    const std::vector<std::string> stopped = {kForcedFlush,
                                              Disable(CUPTI_ACTIVITY_KIND_MEMSET),
                                              Disable(CUPTI_ACTIVITY_KIND_MEMCPY),
                                              Disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL)};
    CHECK(api.calls == stopped);
    api.calls.clear();
    session.stop();  // idempotent
    CHECK(api.calls.empty());
  }
  CHECK(api.calls.empty());  // the destructor of a stopped session does nothing
  {
    CuptiSession session(api);  // a new session may start once the old one stopped
    api.EmitKernel(kFlashMangled, 1000);
    api.calls.clear();
  }
  // The destructor stops a running session: flush first (records arrive), then disable.
  REQUIRE(api.calls.size() == 4);
  CHECK(api.calls[0] == kForcedFlush);
  CHECK(api.calls[3] == Disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
  CHECK(api.buffers_completed == 1);
}

TEST_CASE("CuptiSession reports the CUPTI call that failed and cleans up", "[profiler]") {
  FakeCuptiApi api;
  api.fail_enable = CUPTI_ACTIVITY_KIND_MEMSET;
  REQUIRE_THROWS_WITH(CuptiSession(api), "CUPTI: cuptiActivityEnable(MEMSET): FAKE_CUPTI_ERROR_" +
                                             std::to_string(CUPTI_ERROR_NOT_COMPATIBLE));
  // The kinds enabled before the failure are disabled again, newest first.
  REQUIRE(api.calls.size() == 7);
  CHECK(api.calls[5] == Disable(CUPTI_ACTIVITY_KIND_MEMCPY));
  CHECK(api.calls[6] == Disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
  api.fail_enable = CUPTI_ACTIVITY_KIND_INVALID;
  REQUIRE_NOTHROW(CuptiSession(api));  // the failed one did not stay registered as active

  CuptiSession session(api);
  api.fail_flush = CUPTI_ERROR_UNKNOWN;
  REQUIRE_THROWS_AS(session.flush(), RunError);
  REQUIRE_THROWS_WITH(session.stop(), "CUPTI: cuptiActivityFlushAll: FAKE_CUPTI_ERROR_" +
                                          std::to_string(CUPTI_ERROR_UNKNOWN));
  CHECK_FALSE(session.running());
  api.fail_flush = CUPTI_SUCCESS;
  REQUIRE_NOTHROW(CuptiSession(api));  // stopped despite the error
}

TEST_CASE("CuptiSession parses kernel, memcpy and memset records from CUPTI buffers",
          "[profiler]") {
  FakeCuptiApi api;
  CuptiSession session(api);
  std::mt19937 rng(42);
  std::uniform_int_distribution<uint64_t> dur(1000, 200000);
  struct Expected {
    std::string name;
    uint64_t duration;
  };
  std::vector<Expected> expected;
  for (int i = 0; i < 25; ++i) {
    const bool flash = rng() % 2 == 0;
    const uint64_t d = dur(rng);
    api.EmitKernel(flash ? kFlashMangled : kGemmMangled, d);
    expected.push_back({flash ? kFlashDemangled : kGemmDemangled, d});
  }
  api.EmitMemcpy(CUPTI_ACTIVITY_MEMCPY_KIND_HTOD, 1 << 20, 3000);
  api.EmitMemset(4096, 700);
  api.EmitKernelAt("unnamed_untimed", 0, 0);  // CUPTI had no memory for its timestamps
  api.EmitRuntimeApi();                       // a kind the profiler does not read
  api.EmitKernel("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT", 4200, 3);

  CHECK(session.take_records().empty());  // nothing arrives before a flush
  session.flush();
  const std::vector<KernelRecord> records = session.take_records();
  REQUIRE(records.size() == expected.size() + 3);
  for (size_t i = 0; i < expected.size(); ++i) {
    INFO(i);
    CHECK(records[i].name == expected[i].name);
    CHECK(records[i].category == (expected[i].name == kFlashDemangled ? "attention" : "gemm"));
    CHECK(records[i].end_ns - records[i].start_ns == static_cast<int64_t>(expected[i].duration));
    CHECK(records[i].stream == 7);
    CHECK(records[i].correlation == static_cast<int64_t>(i + 1));
    CHECK_FALSE(records[i].is_memcpy);
    if (i > 0) CHECK(records[i].start_ns > records[i - 1].end_ns);
  }
  const KernelRecord& copy = records[expected.size()];
  CHECK(copy.name == "memcpy HtoD");
  CHECK(copy.is_memcpy);
  CHECK(copy.bytes == (1 << 20));
  CHECK(copy.end_ns - copy.start_ns == 3000);
  const KernelRecord& set = records[expected.size() + 1];
  CHECK(set.name == "memset");
  CHECK(set.is_memcpy);
  CHECK(set.bytes == 4096);
  const KernelRecord& last = records.back();
  CHECK(last.name == "nvjet_tst_128x256_64x4_1x2_h_bz_coopA_TNT");
  CHECK(last.category == "gemm");
  CHECK(last.stream == 3);
  CHECK(session.untimed_records() == 1);
  CHECK(session.dropped_records() == 0);
  CHECK(session.take_records().empty());  // taken once
}

TEST_CASE("ParseActivityBuffer counts untimed and foreign records", "[profiler]") {
  FakeCuptiApi api;
  CuptiSession session(api);
  api.EmitRuntimeApi();
  api.EmitKernelAt(kGemmMangled, 5000, 0);  // no end: untimed
  api.EmitKernelAt(kGemmMangled, 5000, 9000);
  // Parse a standalone copy of the records through the same API.
  std::vector<uint8_t> bytes;
  {
    const size_t size = sizeof(CUpti_ActivityAPI) + 2 * sizeof(CuptiKernelRecord);
    ActivityBuffer buffer(size);
    CUpti_ActivityAPI runtime{};
    runtime.kind = CUPTI_ACTIVITY_KIND_RUNTIME;
    CuptiKernelRecord k{};
    k.kind = CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL;
    k.name = kGemmMangled;
    k.start = 5000;
    std::memcpy(buffer.data(), &runtime, sizeof(runtime));
    std::memcpy(buffer.data() + sizeof(runtime), &k, sizeof(k));
    k.end = 9000;
    std::memcpy(buffer.data() + sizeof(runtime) + sizeof(k), &k, sizeof(k));
    const ParsedActivity parsed = ParseActivityBuffer(api, buffer.data(), size);
    CHECK(parsed.other_kinds == 1);
    CHECK(parsed.untimed == 1);
    CHECK(parsed.error.empty());
    REQUIRE(parsed.records.size() == 1);
    CHECK(parsed.records[0].name == kGemmDemangled);
    CHECK(parsed.records[0].end_ns - parsed.records[0].start_ns == 4000);
  }
  CHECK(ParseActivityBuffer(api, nullptr, 0).records.empty());
  session.flush();
  CHECK(session.take_records().size() == 1);
  CHECK(session.untimed_records() == 1);
}

TEST_CASE("CuptiSession collects dropped records and buffers completed on CUPTI's thread",
          "[profiler]") {
  FakeCuptiApi api;
  api.complete_full_buffers_on_thread = true;
  api.dropped_per_buffer = 3;
  // Room for four kernel records: 50 kernels fill 13 buffers.
  CuptiSession session(api, 4 * sizeof(CuptiKernelRecord));
  std::mt19937 rng(5);
  std::vector<uint64_t> durations;
  for (int i = 0; i < 50; ++i) {
    durations.push_back(1000 + rng() % 50000);
    api.EmitKernel(kFlashMangled, durations.back());
  }
  session.flush();
  CHECK(api.buffers_requested == 13);
  CHECK(api.buffers_completed == 13);
  const std::vector<KernelRecord> records = session.take_records();
  REQUIRE(records.size() == durations.size());
  for (size_t i = 0; i < records.size(); ++i) {
    CHECK(records[i].end_ns - records[i].start_ns == static_cast<int64_t>(durations[i]));
    CHECK(records[i].correlation == static_cast<int64_t>(i + 1));
  }
  CHECK(session.dropped_records() == 13 * 3);
  // Recycled buffers went back zeroed: CUPTI was told it need not zero them.
  CHECK(api.dirty_buffers == 0);
}

TEST_CASE("CuptiSession warns about a different CUPTI library or refused settings",
          "[profiler]") {
  FakeCuptiApi api;
  api.version = CUPTI_API_VERSION + 100;
  api.refuse_attributes = true;
  CuptiSession session(api);
  REQUIRE(session.warnings().size() == 2);
  CHECK(session.warnings()[0].find("kernel record layout may differ") != std::string::npos);
  CHECK(session.warnings()[1] ==
        "CUPTI would not take zeroed buffers: launches may stall while it zeroes them");
  CHECK(session.running());
}

TEST_CASE("CuptiProfiler measures kernel time per repeat and discards warm-up", "[profiler]") {
  auto api = std::make_shared<FakeCuptiApi>();
  int device_syncs = 0;
  CuptiProfiler profiler(api, [&] { ++device_syncs; });
  CHECK(profiler.source() == "cupti");
  std::mt19937 rng(9);
  std::uniform_int_distribution<uint64_t> dur(2000, 90000);
  std::vector<std::map<std::string, uint64_t>> per_run;  // kernel -> duration, every run
  const Measurement m = profiler.measure(
      [&] {
        const uint64_t a = dur(rng);
        const uint64_t b = dur(rng);
        api->EmitKernel(kFlashMangled, a);
        api->EmitKernel(kGemmMangled, b);
        per_run.push_back({{kFlashDemangled, a}, {kGemmDemangled, b}});
      },
      3, 5);
  CHECK(device_syncs == 8);  // no sync given: the device sync after every run
  REQUIRE(per_run.size() == 8);
  CHECK(m.source == "cupti");
  CHECK(m.dropped_records == 0);
  CHECK(m.warnings.empty());
  REQUIRE(m.records.size() == 10);  // 5 timed repeats x 2 kernels; warm-up discarded
  REQUIRE(m.repeat_ns.size() == 5);
  std::vector<double> flash;
  for (int i = 0; i < 5; ++i) {
    const auto& run = per_run[static_cast<size_t>(3 + i)];
    // Sequential kernels: busy time is the sum of the two durations.
    CHECK(m.repeat_ns[static_cast<size_t>(i)] ==
          static_cast<double>(run.at(kFlashDemangled) + run.at(kGemmDemangled)));
    flash.push_back(static_cast<double>(run.at(kFlashDemangled)));
    CHECK(m.records[static_cast<size_t>(2 * i)].repeat == i);
    CHECK(m.records[static_cast<size_t>(2 * i + 1)].repeat == i);
  }
  CHECK(m.median_ns == Median(m.repeat_ns));
  REQUIRE(m.kernels.size() == 2);
  const KernelTime& fk = m.kernels[0].name == kFlashDemangled ? m.kernels[0] : m.kernels[1];
  CHECK(fk.name == kFlashDemangled);
  CHECK(fk.category == "attention");
  CHECK(fk.launches == 5);
  CHECK(fk.median_ns == Median(flash));
  CHECK(fk.min_ns == *std::min_element(flash.begin(), flash.end()));
  const std::vector<KernelTime> categories = AggregateCategories(m.kernels);
  REQUIRE(categories.size() == 2);
  CHECK(categories[0].total_ns + categories[1].total_ns ==
        Approx(m.repeat_ns[0] + m.repeat_ns[1] + m.repeat_ns[2] + m.repeat_ns[3] +
               m.repeat_ns[4]));
  CHECK(api->dirty_buffers == 0);
  // The session is over: a new one may start.
  REQUIRE_NOTHROW(CuptiSession(*api));
}

TEST_CASE("CuptiProfiler counts overlapping streams once and reports lost records",
          "[profiler]") {
  auto api = std::make_shared<FakeCuptiApi>();
  api->dropped_per_buffer = 2;
  CuptiProfiler profiler(api, {});
  int syncs = 0;
  int run = 0;
  const Measurement m = profiler.measure(
      [&] {
        const uint64_t t = api->clock_ns;
        api->EmitKernelAt(kFlashMangled, t, t + 10000, 1);
        api->EmitKernelAt(kGemmMangled, t + 4000, t + 16000, 2);  // overlaps on another stream
        api->EmitKernelAt("late", t + 20000, t + 21000, 1);
        if (run++ == 1) {
          api->EmitKernelAt(kGemmMangled, t - 9000, t - 8000, 1);  // ended before the repeat
          api->EmitKernelAt(kGemmMangled, t + 500, 0, 1);        // no timestamps
        }
        api->clock_ns = t + 30000;
      },
      0, 2, [&] { ++syncs; });
  CHECK(syncs == 2);  // the given sync replaces the device sync
  REQUIRE(m.repeat_ns.size() == 2);
  CHECK(m.repeat_ns[0] == 17000);  // [0, 16000) union plus [20000, 21000)
  CHECK(m.repeat_ns[1] == 17000);
  CHECK(m.records.size() == 6);
  // Only the two repeats wrote records, one buffer each, and each buffer reported 2 dropped;
  // the untimed record counts as lost too.
  CHECK(m.dropped_records == 2 * 2 + 1);
  REQUIRE(m.warnings.size() == 3);
  CHECK(m.warnings[0] == "CUPTI dropped 4 activity records (buffer space): times are too low");
  CHECK(m.warnings[1] == "1 activity records came without timestamps and were left out");
  CHECK(m.warnings[2] == "1 records ended before their repeat began and were left out");
}

TEST_CASE("CuptiProfiler stops its session when the region throws", "[profiler]") {
  auto api = std::make_shared<FakeCuptiApi>();
  CuptiProfiler profiler(api, {});
  REQUIRE_THROWS_WITH(profiler.measure([] { throw std::runtime_error("launch failed"); }, 1, 2),
                      "launch failed");
  CHECK(api->calls.back() == Disable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL));
  REQUIRE_NOTHROW(CuptiSession(*api));
  REQUIRE_THROWS_WITH(profiler.measure([] {}, 0, 0), "profiler: repeats must be >= 1 (got 0)");
}

}  // namespace sparsetune
