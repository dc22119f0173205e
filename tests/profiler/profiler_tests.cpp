// Profiler pieces that need no CUPTI: categories, demangling, aggregation, the shared summary,
// Chrome trace export, the wall-clock profiler and MakeProfiler's fallback.
#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <stdexcept>
#include <thread>

#include "core/error.h"
#include "profiler/profiler.h"
#include "tests/catch.h"

#if SPARSETUNE_WITH_CUPTI
#include <cuda_runtime_api.h>
#endif

namespace sparsetune {
namespace {

double SortedMedian(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 == 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

KernelRecord Rec(const std::string& name, int64_t start, int64_t end, int64_t repeat = 0,
                 uint32_t stream = 7) {
  KernelRecord r;
  r.name = name;
  r.category = KernelCategory(name);
  r.start_ns = start;
  r.end_ns = end;
  r.repeat = repeat;
  r.stream = stream;
  return r;
}

}  // namespace

TEST_CASE("KernelCategory sorts real kernel names", "[profiler]") {
  const std::vector<std::pair<std::string, std::string>> table = {
      // attention: FlashAttention, PyTorch's memory-efficient and cuDNN SDPA kernels, ours
      {"void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4, false, "
       "false, cutlass::bfloat16_t>, false, true>(pytorch_flash::Flash_fwd_params)",
       "attention"},
      {"fmha_cutlassF_bf16_aligned_64x64_rf_sm80(PyTorchMemEffAttention::AttentionKernel<"
       "cutlass::bfloat16_t, cutlass::arch::Sm80, true, 64, 64, 64, true, true>::Params)",
       "attention"},
      {"cudnn_generated_fort_native_sdpa_sm90_flash_fprop_wgmma_f16_knob_7_64x128x128_4x1x1_"
       "kernel0_0",
       "attention"},
      {"void sparsetune::cuda::sparse_attn_fwd_kernel<64, 128>(sparsetune::SparseAttnParams)",
       "attention"},
      {"void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, "
       "at::native::(anonymous namespace)::SoftMaxForwardEpilogue>(float*, float const*, int)",
       "attention"},
      // mask / pattern prediction
      {"void sparsetune::cuda::block_score_kernel<32>(float const*, float*, int)", "mask"},
      {"void at::native::sbtopk::gatherTopK<float, unsigned int, 2, false>(at::cuda::detail::"
       "TensorInfo<float const, unsigned int>, unsigned int, unsigned int, bool)",
       "mask"},
      {"void at::native::(anonymous namespace)::avg_pool2d_out_cuda_frame<float, float>(int, "
       "float const*, long, long, long, long, long, long, long, long, long, long, float*, int, "
       "bool, bool)",
       "mask"},
      {"void sparsetune::cuda::arm_recognize_kernel(float const*, int*)", "mask"},
      {"void at::native::masked_fill_kernel(at::TensorIterator&, c10::Scalar const&)", "mask"},
      // gather / scatter
      {"void at::native::index_elementwise_kernel<128, 4, at::native::gpu_index_kernel<"
       "at::native::index_kernel_impl<at::native::OpaqueType<2> >(at::TensorIteratorBase&, "
       "c10::ArrayRef<long>, c10::ArrayRef<long>)::{lambda(char*, char const*, long)#1}>(at::"
       "TensorIteratorBase&, c10::ArrayRef<long>, c10::ArrayRef<long>, at::native::index_kernel_"
       "impl<at::native::OpaqueType<2> >(at::TensorIteratorBase&, c10::ArrayRef<long>, c10::"
       "ArrayRef<long>)::{lambda(char*, char const*, long)#1} const&)::{lambda(int)#1}>(long, "
       "{lambda(int)#1})",
       "gather_scatter"},
      {"void at::native::_scatter_gather_elementwise_kernel<128, 8, at::native::_cuda_scatter_"
       "gather_internal_kernel<true, float>::operator()(at::TensorIterator&, long, long, long, "
       "at::native::ReduceAdd const&)::{lambda(int)#1}>(int, {lambda(int)#1})",
       "gather_scatter"},
      {"void sparsetune::cuda::token_gather_kernel<__nv_bfloat16>(__nv_bfloat16 const*, int "
       "const*, __nv_bfloat16*, long)",
       "gather_scatter"},
      {"void at::native::(anonymous namespace)::indexSelectLargeIndex<float, long, 2, 2, -2, "
       "true>(at::cuda::detail::TensorInfo<float, long>, long, long)",
       "gather_scatter"},
      // gemm
      {"sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64_warpgroupsize1x1x1_execute_"
       "segment_k_off_kernel__5x_cublas",
       "gemm"},
      {"void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_16x16_128x2_tn_"
       "align8>(cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_16x16_128x2_tn_align8::Params)",
       "gemm"},
      {"nvjet_tst_192x192_64x4_2x1_v_bz_coopB_TNT", "gemm"},
      {"ampere_sgemm_128x64_tn", "gemm"},
      {"void cublasLt::splitKreduce_kernel<32, 16, int, float, float, float, float, false, "
       "float, float, float, true, false, false>(cublasLt::cublasSplitKParams<float>, float "
       "const*, float const*, float*, float const*, float const*, float const*, float const*, "
       "float*, void*, long, float*, int*, float*, float*, float const*, float const*, float "
       "const*)",
       "gemm"},
      // other
      {"void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>, "
       "at::detail::Array<char*, 3> >(int, at::native::CUDAFunctor_add<float>, at::detail::"
       "Array<char*, 3>)",
       "other"},
      {"void at::native::(anonymous namespace)::vectorized_layer_norm_kernel<c10::BFloat16, "
       "float>(int, float, c10::BFloat16 const*, c10::BFloat16 const*, c10::BFloat16 const*, "
       "float*, float*, c10::BFloat16*)",
       "other"},
      {"warmup_kernel(float*)", "other"},  // "arm" inside a word is not ARM
      {"memcpy HtoD", "other"},
      {"memset", "other"},
  };
  for (const auto& [name, category] : table) {
    INFO(name);
    CHECK(KernelCategory(name) == category);
  }
}

TEST_CASE("DemangleKernelName demangles C++ names and leaves others alone", "[profiler]") {
  CHECK(DemangleKernelName("_Z9vectorAddPKfS0_Pfi") ==
        "vectorAdd(float const*, float const*, float*, int)");
  CHECK(DemangleKernelName("nvjet_tst_192x192_64x4_2x1_v_bz_coopB_TNT") ==
        "nvjet_tst_192x192_64x4_2x1_v_bz_coopB_TNT");
  CHECK(DemangleKernelName("_Znot_a_real_mangling!") == "_Znot_a_real_mangling!");
  CHECK(DemangleKernelName("") == "");
}

TEST_CASE("Median takes the middle, or the mean of the two middle values", "[profiler]") {
  CHECK(Median({}) == 0);
  CHECK(Median({4.0}) == 4.0);
  CHECK(Median({9.0, 1.0, 5.0}) == 5.0);
  CHECK(Median({9.0, 1.0, 5.0, 3.0}) == 4.0);
  std::mt19937 rng(11);
  std::uniform_real_distribution<double> dist(1.0, 1e6);
  for (int n = 1; n < 40; ++n) {
    std::vector<double> v(static_cast<size_t>(n));
    for (double& x : v) x = dist(rng);
    CHECK(Median(v) == SortedMedian(v));
  }
}

TEST_CASE("AggregateKernels matches a reference on random durations", "[profiler]") {
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int64_t> dur(1000, 900000);
  const std::vector<std::string> names = {"flash_fwd_kernel", "nvjet_tst_gemm", "gatherTopK",
                                          "index_select_kernel", "layer_norm"};
  std::vector<KernelRecord> records;
  std::map<std::string, std::vector<double>> reference;
  int64_t t = 1'000'000;
  for (int i = 0; i < 300; ++i) {
    const std::string& name = names[static_cast<size_t>(rng() % names.size())];
    const int64_t d = dur(rng);
    records.push_back(Rec(name, t, t + d, i % 3));
    reference[name].push_back(static_cast<double>(d));
    t += d + 100;
  }
  const std::vector<KernelTime> rows = AggregateKernels(records);
  REQUIRE(rows.size() == reference.size());
  for (size_t i = 1; i < rows.size(); ++i) CHECK(rows[i - 1].total_ns >= rows[i].total_ns);
  for (const KernelTime& k : rows) {
    INFO(k.name);
    const std::vector<double>& d = reference.at(k.name);
    double total = 0;
    for (double x : d) total += x;
    CHECK(k.category == KernelCategory(k.name));
    CHECK(k.launches == static_cast<int64_t>(d.size()));
    CHECK(k.total_ns == Approx(total));
    CHECK(k.mean_ns == Approx(total / static_cast<double>(d.size())));
    CHECK(k.min_ns == *std::min_element(d.begin(), d.end()));
    CHECK(k.median_ns == SortedMedian(d));
  }
  CHECK(AggregateKernels({}).empty());
}

TEST_CASE("AggregateCategories sums kernels per category", "[profiler]") {
  std::vector<KernelTime> kernels(3);
  kernels[0] = {"flash_a", "attention", 3, 300, 100, 90, 100};
  kernels[1] = {"flash_b", "attention", 1, 500, 500, 500, 500};
  kernels[2] = {"gemm_a", "gemm", 4, 1000, 250, 200, 240};
  const std::vector<KernelTime> rows = AggregateCategories(kernels);
  REQUIRE(rows.size() == 2);
  CHECK(rows[0].name == "gemm");
  CHECK(rows[0].category == "gemm");
  CHECK(rows[0].launches == 4);
  CHECK(rows[0].total_ns == 1000);
  CHECK(rows[0].median_ns == 240);
  CHECK(rows[1].name == "attention");
  CHECK(rows[1].launches == 4);
  CHECK(rows[1].total_ns == 800);
  CHECK(rows[1].mean_ns == 200);
  CHECK(rows[1].min_ns == 90);
  // Launch-weighted medians {100, 100, 100, 500}: mean of the two middle ones.
  CHECK(rows[1].median_ns == 100);
  CHECK(AggregateCategories({}).empty());
}

TEST_CASE("SummarizeRecords measures each repeat as the union of its intervals", "[profiler]") {
  std::vector<KernelRecord> records = {
      Rec("a", 1000, 3000, 0, 1), Rec("b", 2000, 5000, 0, 2),  // overlap: union 4000
      Rec("c", 6000, 7000, 0, 1),                               // +1000
      Rec("a", 10000, 12000, 1, 1),                             // repeat 1: 2000
      Rec("a", 20000, 23000, 2, 1), Rec("a", 20500, 21000, 2, 2),  // nested: 3000
  };
  const Measurement m = SummarizeRecords("cupti", records, 4);
  CHECK(m.source == "cupti");
  REQUIRE(m.repeat_ns.size() == 4);
  CHECK(m.repeat_ns[0] == 5000);
  CHECK(m.repeat_ns[1] == 2000);
  CHECK(m.repeat_ns[2] == 3000);
  CHECK(m.repeat_ns[3] == 0);
  REQUIRE(m.warnings.size() == 1);
  CHECK(m.warnings[0] == "repeat 3 recorded no activity");
  CHECK(m.median_ns == 2500);
  CHECK(m.spread == Approx(5000.0 / 2500.0));
  CHECK(m.records.size() == records.size());
  REQUIRE(m.kernels.size() == 3);
  CHECK(m.kernels[0].name == "a");
  CHECK(m.kernels[0].launches == 4);
}

TEST_CASE("ChromeTrace writes complete events in microseconds, ordered by start",
          "[profiler]") {
  std::mt19937 rng(77);
  std::uniform_int_distribution<int64_t> dur(100, 50000);
  const int64_t base = 1'700'000'000'123'456'789;  // CUPTI-sized timestamps
  std::vector<KernelRecord> records;
  for (int i = 0; i < 20; ++i) {
    const int64_t start = base + static_cast<int64_t>(rng() % 1'000'000);
    records.push_back(Rec(i % 2 ? "flash_fwd" : "nvjet_gemm", start, start + dur(rng), i % 4,
                          static_cast<uint32_t>(7 + i % 2)));
    records.back().correlation = 100 + i;
  }
  records[3].is_memcpy = true;
  records[3].bytes = 4096;
  const Json trace = ChromeTrace(records, "sparsetune profile");
  // Survives a round trip through text, as Perfetto would read it.
  const Json j = Json::parse(trace.dump());
  CHECK(j.at("displayTimeUnit") == "ns");
  const Json& events = j.at("traceEvents");
  int64_t earliest = records[0].start_ns;
  for (const KernelRecord& r : records) earliest = std::min(earliest, r.start_ns);

  std::vector<const Json*> complete;
  int process_names = 0;
  int thread_names = 0;
  for (const Json& e : events) {
    if (e.at("ph") == "M") {
      if (e.at("name") == "process_name") {
        ++process_names;
        CHECK(e.at("args").at("name") == "sparsetune profile");
      } else {
        CHECK(e.at("name") == "thread_name");
        ++thread_names;
      }
      continue;
    }
    REQUIRE(e.at("ph") == "X");
    complete.push_back(&e);
  }
  CHECK(process_names == 1);
  CHECK(thread_names == 2);
  REQUIRE(complete.size() == records.size());
  for (size_t i = 1; i < complete.size(); ++i) {
    CHECK(complete[i - 1]->at("ts").get<double>() <= complete[i]->at("ts").get<double>());
  }
  // Every record shows up once with its own times, relative to the earliest start.
  for (const KernelRecord& r : records) {
    const Json* match = nullptr;
    for (const Json* e : complete) {
      if (e->at("args").at("correlation") == r.correlation) match = e;
    }
    REQUIRE(match != nullptr);
    CHECK(match->at("name") == r.name);
    CHECK(match->at("ts").get<double>() == Approx((r.start_ns - earliest) / 1000.0));
    CHECK(match->at("dur").get<double>() == Approx((r.end_ns - r.start_ns) / 1000.0));
    CHECK(match->at("cat") == r.category);
    CHECK(match->at("pid") == r.device);
    CHECK(match->at("tid") == r.stream);
    CHECK(match->at("args").at("repeat") == r.repeat);
    CHECK(match->at("args").contains("bytes") == r.is_memcpy);
  }
  const Json empty = ChromeTrace({}, "x");
  CHECK(empty.at("traceEvents").empty());
}

TEST_CASE("Wall clock profiler times each repeat of region + sync", "[profiler]") {
  auto profiler = MakeWallClockProfiler();
  CHECK(profiler->source() == "wall_clock");
  int runs = 0;
  int syncs = 0;
  std::vector<int> order;  // 1 = region, 2 = sync
  const Measurement m = profiler->measure(
      [&] {
        ++runs;
        order.push_back(1);
        std::this_thread::sleep_for(std::chrono::microseconds(200));
      },
      2, 4,
      [&] {
        ++syncs;
        order.push_back(2);
      });
  CHECK(runs == 6);
  CHECK(syncs == 6);
  for (size_t i = 0; i < order.size(); ++i) CHECK(order[i] == (i % 2 == 0 ? 1 : 2));
  CHECK(m.source == "wall_clock");
  CHECK(m.dropped_records == 0);
  CHECK(m.warnings.empty());
  REQUIRE(m.records.size() == 4);
  REQUIRE(m.repeat_ns.size() == 4);
  for (size_t i = 0; i < m.records.size(); ++i) {
    const KernelRecord& r = m.records[i];
    CHECK(r.name == "region");
    CHECK(r.category == "wall");
    CHECK(r.repeat == static_cast<int64_t>(i));
    // sleep_for waits at least its duration on the steady clock: a bound, not a threshold.
    CHECK(r.end_ns - r.start_ns >= 200000);
    CHECK(m.repeat_ns[i] == static_cast<double>(r.end_ns - r.start_ns));
    if (i > 0) CHECK(r.start_ns >= m.records[i - 1].end_ns);
  }
  REQUIRE(m.kernels.size() == 1);
  CHECK(m.kernels[0].name == "region");
  CHECK(m.kernels[0].category == "wall");
  CHECK(m.kernels[0].launches == 4);
  CHECK(m.median_ns == Median(m.repeat_ns));

  // No sync given: the region alone.
  const Measurement bare = profiler->measure([&] { ++runs; }, 0, 1);
  CHECK(bare.repeat_ns.size() == 1);
  CHECK(runs == 7);
}

TEST_CASE("Profilers reject bad arguments and pass region errors on", "[profiler]") {
  auto profiler = MakeWallClockProfiler();
  const auto noop = [] {};
  REQUIRE_THROWS_AS(profiler->measure(noop, 0, 0), InputError);
  REQUIRE_THROWS_WITH(profiler->measure(noop, -1, 3),
                      "profiler: warmup must be >= 0 (got -1)");
  REQUIRE_THROWS_WITH(profiler->measure(noop, 1, 0), "profiler: repeats must be >= 1 (got 0)");
  REQUIRE_THROWS_AS(profiler->measure(std::function<void()>{}, 1, 1), RunError);
  REQUIRE_THROWS_WITH(profiler->measure([] { throw std::runtime_error("kernel failed"); }, 0, 2),
                      "kernel failed");
}

TEST_CASE("MakeProfiler says which profiler it chose and why it fell back", "[profiler]") {
  std::string why = "stale";
  auto wall = MakeProfiler(false, &why);
  CHECK(wall->source() == "wall_clock");
  CHECK(why == "device profiling not requested");
  REQUIRE_NOTHROW(MakeProfiler(false));

  auto device = MakeProfiler(true, &why);
  if (device->source() == "cupti") {
    CHECK(why.empty());
  } else {
    CHECK(device->source() == "wall_clock");
    CHECK_FALSE(why.empty());
    WARN("MakeProfiler(true) fell back to the wall clock: " << why);
  }
#if SPARSETUNE_WITH_CUPTI
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    CHECK(device->source() == "wall_clock");
    CHECK(why.rfind("no CUDA device: ", 0) == 0);
  }
#else
  CHECK(device->source() == "wall_clock");
  CHECK(why == "built without CUPTI (SPARSETUNE_WITH_CUPTI is off)");
#endif
  // The fallback still measures.
  const Measurement m = device->measure([] {}, 0, 2);
  CHECK(m.repeat_ns.size() == 2);
}

}  // namespace sparsetune
