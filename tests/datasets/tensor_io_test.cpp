// Torch conversion: fixture values through ToTorch, and torch -> file -> torch round trips.
#include "datasets/tensor_io.h"

#include <cmath>
#include <cstring>

#include "core/error.h"
#include "core/json_reader.h"
#include "tests/catch.h"
#include "tests/test_util.h"

namespace sparsetune {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(SPARSETUNE_TEST_DATA) / "fixtures" / "safetensors";

bool SameBytes(const torch::Tensor& a, const torch::Tensor& b) {
  const torch::Tensor ca = a.contiguous(), cb = b.contiguous();
  return ca.scalar_type() == cb.scalar_type() && ca.sizes() == cb.sizes() && ca.nbytes() == cb.nbytes() &&
         std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.nbytes()) == 0;
}

TEST_CASE("tensor_io: fixture values of every dtype decode exactly through torch", "[datasets]") {
  const Json expected = LoadJsonFile(kFixtures / "expected.json");
  const Json& tensors = expected.at("valid").at("all_dtypes.safetensors").at("tensors");
  std::map<std::string, std::string> metadata;
  const auto loaded = LoadTensors(kFixtures / "valid" / "all_dtypes.safetensors", &metadata);
  CHECK(metadata.at("format") == "pt");
  REQUIRE(loaded.size() == tensors.size());
  for (const auto& [name, t] : tensors.items()) {
    INFO(name);
    const torch::Tensor& tensor = loaded.at(name);
    CHECK(tensor.sizes().vec() == t.at("shape").get<std::vector<int64_t>>());
    const std::string dtype = t.at("dtype").get<std::string>();
    const Json& values = t.at("values");
    REQUIRE(static_cast<size_t>(tensor.numel()) == values.size());
    if (dtype == "U64") {
      // torch has no uint64 -> int64/double conversion that keeps every value; compare bits.
      for (int64_t i = 0; i < tensor.numel(); ++i) {
        uint64_t v;
        std::memcpy(&v, static_cast<const uint8_t*>(tensor.data_ptr()) + 8 * i, 8);
        CHECK(v == values[static_cast<size_t>(i)].get<uint64_t>());
      }
    } else if (dtype[0] == 'F' || dtype == "BF16") {
      const torch::Tensor flat = tensor.to(torch::kFloat64).reshape({-1});
      for (int64_t i = 0; i < flat.numel(); ++i) {
        const double v = flat[i].item<double>();
        const Json& e = values[static_cast<size_t>(i)];
        if (e.is_string()) {
          const std::string s = e.get<std::string>();
          CHECK((s == "nan" ? std::isnan(v) : std::isinf(v) && (v > 0) == (s == "inf")));
        } else {
          CHECK(v == e.get<double>());
          CHECK(std::signbit(v) == std::signbit(e.get<double>()));
        }
      }
    } else {
      const torch::Tensor flat = tensor.to(torch::kInt64).reshape({-1});
      for (int64_t i = 0; i < flat.numel(); ++i) {
        CHECK(flat[i].item<int64_t>() == values[static_cast<size_t>(i)].get<int64_t>());
      }
    }
  }
  CHECK(loaded.at("t_bf16").scalar_type() == torch::kBFloat16);
  CHECK(loaded.at("t_f16").scalar_type() == torch::kFloat16);
  CHECK(loaded.at("t_bool").scalar_type() == torch::kBool);
  CHECK(loaded.at("t_u16").scalar_type() == torch::kUInt16);
}

TEST_CASE("tensor_io: random torch tensors round-trip through a file", "[datasets]") {
  torch::manual_seed(1234);
  test::TempDir dir;
  std::map<std::string, torch::Tensor> tensors;
  tensors["f64"] = torch::randn({3, 5}, torch::kFloat64);
  tensors["f32"] = torch::randn({2, 3, 4});
  tensors["f16"] = torch::randn({7}).to(torch::kFloat16);
  tensors["bf16"] = torch::randn({4, 2}).to(torch::kBFloat16);
  tensors["i64"] = torch::randint(-1000000, 1000000, {6}, torch::kInt64);
  tensors["i32"] = torch::randint(-100000, 100000, {2, 2}, torch::kInt32);
  tensors["i16"] = torch::randint(-30000, 30000, {5}, torch::kInt16);
  tensors["i8"] = torch::randint(-128, 128, {9}, torch::kInt8);
  tensors["u8"] = torch::randint(0, 256, {3, 3}, torch::kUInt8);
  tensors["bool"] = torch::randint(0, 2, {11}).to(torch::kBool);
  tensors["u16"] = torch::randint(0, 65536, {4}, torch::kInt32).to(torch::kUInt16);
  tensors["u32"] = torch::randint(0, 1 << 30, {4}, torch::kInt64).to(torch::kUInt32);
  tensors["u64"] = torch::randint(0, 1 << 30, {4}, torch::kInt64).to(torch::kUInt64);
  // Views that are not contiguous must be written as their logical contents.
  tensors["transposed"] = torch::randn({4, 6}).t();
  tensors["strided"] = torch::randn({10}).slice(0, 1, 10, 3);
  tensors["scalar"] = torch::randn({});
  tensors["empty"] = torch::randn({0, 3});

  const fs::path path = dir / "t.safetensors";
  SaveTensors(path, tensors, {{"origin", "tensor_io_test"}});
  std::map<std::string, std::string> metadata;
  const auto loaded = LoadTensors(path, &metadata);
  CHECK(metadata == std::map<std::string, std::string>{{"origin", "tensor_io_test"}});
  REQUIRE(loaded.size() == tensors.size());
  for (const auto& [name, tensor] : tensors) {
    INFO(name);
    REQUIRE(loaded.count(name) == 1);
    CHECK(loaded.at(name).is_contiguous());
    CHECK(SameBytes(loaded.at(name), tensor));
  }
  CHECK(torch::equal(loaded.at("transposed"), tensors.at("transposed")));
  CHECK(torch::equal(loaded.at("bf16"), tensors.at("bf16")));
}

TEST_CASE("tensor_io: FromTorch copies and names the tensor", "[datasets]") {
  torch::manual_seed(7);
  const torch::Tensor x = torch::randn({2, 3}).t();
  const SafeTensor s = FromTorch("w", x);
  CHECK(s.name == "w");
  CHECK(s.dtype == DType::kF32);
  CHECK(s.shape == std::vector<int64_t>{3, 2});
  REQUIRE(s.data.size() == 24);
  float first_row[2];
  std::memcpy(first_row, s.data.data(), 8);
  CHECK(first_row[0] == x[0][0].item<float>());
  CHECK(first_row[1] == x[0][1].item<float>());
  CHECK(torch::equal(ToTorch(s), x));
}

TEST_CASE("tensor_io: dtypes without a safetensors spelling are ShapeErrors", "[datasets]") {
  const torch::Tensor complex = torch::randn({2}, torch::kComplexFloat);
  REQUIRE_THROWS_AS(FromTorch("z", complex), ShapeError);
  try {
    FromTorch("z", complex);
  } catch (const ShapeError& e) {
    CHECK(std::string(e.what()).find("tensor 'z'") != std::string::npos);
  }
  REQUIRE_THROWS_AS(FromTorch("u", torch::Tensor()), ShapeError);
  SafeTensor broken{"broken", DType::kF32, {2}, {1, 2, 3}};
  REQUIRE_THROWS_AS(ToTorch(broken), ShapeError);
}

}  // namespace
}  // namespace sparsetune
