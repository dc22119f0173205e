// The reader against fixtures written by an independent Python writer
// (tests/fixtures/safetensors/make_fixtures.py), and writer -> reader round trips.
#include "datasets/safetensors.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <set>

#include "core/error.h"
#include "core/json_reader.h"
#include "tests/catch.h"
#include "tests/test_util.h"

namespace sparsetune {
namespace {

namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(SPARSETUNE_TEST_DATA) / "fixtures" / "safetensors";

std::vector<uint8_t> FromHex(const std::string& hex) {
  std::vector<uint8_t> out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<uint8_t>(std::stoul(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

// The message of the InputError that `fn` throws, or "" when it throws nothing.
template <typename Fn>
std::string InputErrorMessage(Fn fn) {
  try {
    fn();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

bool Contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::vector<uint8_t> RandomBytes(std::mt19937_64& rng, DType dtype, int64_t numel) {
  std::vector<uint8_t> bytes(static_cast<size_t>(numel) * DTypeSize(dtype));
  for (auto& b : bytes) b = static_cast<uint8_t>(dtype == DType::kBool ? rng() % 2 : rng());
  return bytes;
}

// Header length and parsed header of a file written by SaveSafeTensors.
std::pair<uint64_t, Json> ReadHeader(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char field[8];
  in.read(reinterpret_cast<char*>(field), 8);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(field[i]) << (8 * i);
  std::string text(n, '\0');
  in.read(text.data(), static_cast<std::streamsize>(n));
  return {n, Json::parse(text)};
}

const std::vector<DType> kAllDTypes = {DType::kF64, DType::kF32, DType::kF16, DType::kBF16, DType::kI64,
                                       DType::kI32, DType::kI16, DType::kI8,  DType::kU64,  DType::kU32,
                                       DType::kU16, DType::kU8,  DType::kBool};

TEST_CASE("safetensors: dtype names and sizes", "[datasets]") {
  for (const DType d : kAllDTypes) {
    REQUIRE(ParseDType(DTypeName(d)) == d);
  }
  CHECK(DTypeSize(DType::kBF16) == 2);
  CHECK(DTypeSize(DType::kU64) == 8);
  CHECK(DTypeSize(DType::kBool) == 1);
  CHECK_FALSE(ParseDType("f32").has_value());
  CHECK_FALSE(ParseDType("F8_E4M3").has_value());
}

TEST_CASE("safetensors: valid fixtures match the independent writer byte for byte", "[datasets]") {
  const Json expected = LoadJsonFile(kFixtures / "expected.json");
  REQUIRE(expected.at("valid").size() == 2);
  for (const auto& [file_name, entry] : expected.at("valid").items()) {
    const SafeTensorsFile file = SafeTensorsFile::Load(kFixtures / "valid" / file_name);
    std::map<std::string, std::string> metadata = entry.at("metadata");
    CHECK(file.metadata() == metadata);
    std::set<std::string> names(file.names().begin(), file.names().end());
    REQUIRE(names.size() == file.names().size());
    REQUIRE(names.size() == entry.at("tensors").size());
    for (const auto& [name, t] : entry.at("tensors").items()) {
      INFO(file_name << " " << name);
      REQUIRE(file.contains(name));
      const SafeTensor& tensor = file.get(name);
      CHECK(tensor.name == name);
      CHECK(DTypeName(tensor.dtype) == t.at("dtype").get<std::string>());
      CHECK(tensor.shape == t.at("shape").get<std::vector<int64_t>>());
      CHECK(tensor.data == FromHex(t.at("hex").get<std::string>()));
      CHECK(static_cast<size_t>(tensor.numel()) == t.at("values").size());
    }
  }
}

TEST_CASE("safetensors: fixture values decode exactly on the host", "[datasets]") {
  const Json expected = LoadJsonFile(kFixtures / "expected.json");
  const SafeTensorsFile file = SafeTensorsFile::Load(kFixtures / "valid" / "all_dtypes.safetensors");
  const Json& tensors = expected.at("valid").at("all_dtypes.safetensors").at("tensors");
  // The fixture holds every dtype; the 8-byte and 4-byte ones are checked here as numbers (the
  // 2-byte floats go through torch in tensor_io_test.cpp).
  std::set<std::string> dtypes;
  for (const auto& item : tensors.items()) dtypes.insert(item.value().at("dtype").get<std::string>());
  CHECK(dtypes.size() == kAllDTypes.size());

  const SafeTensor& f64 = file.get("t_f64");
  const Json& f64_values = tensors.at("t_f64").at("values");
  for (int64_t i = 0; i < f64.numel(); ++i) {
    double v;
    std::memcpy(&v, f64.data.data() + 8 * i, 8);
    const Json& e = f64_values[static_cast<size_t>(i)];
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      CHECK((s == "nan" ? std::isnan(v) : std::isinf(v) && (v > 0) == (s == "inf")));
    } else {
      CHECK(v == e.get<double>());
      CHECK(std::signbit(v) == std::signbit(e.get<double>()));
    }
  }
  const SafeTensor& i64 = file.get("t_i64");
  for (int64_t i = 0; i < i64.numel(); ++i) {
    int64_t v;
    std::memcpy(&v, i64.data.data() + 8 * i, 8);
    CHECK(v == tensors.at("t_i64").at("values")[static_cast<size_t>(i)].get<int64_t>());
  }
  const SafeTensor& u64 = file.get("t_u64");
  for (int64_t i = 0; i < u64.numel(); ++i) {
    uint64_t v;
    std::memcpy(&v, u64.data.data() + 8 * i, 8);
    CHECK(v == tensors.at("t_u64").at("values")[static_cast<size_t>(i)].get<uint64_t>());
  }
  const SafeTensor& scalar = file.get("scalar_i32");
  REQUIRE(scalar.shape.empty());
  REQUIRE(scalar.numel() == 1);
  int32_t s;
  std::memcpy(&s, scalar.data.data(), 4);
  CHECK(s == tensors.at("scalar_i32").at("values")[0].get<int32_t>());
  CHECK(file.get("empty_f32").data.empty());
  CHECK(file.get("empty_f32").shape == std::vector<int64_t>{0, 4});
}

TEST_CASE("safetensors: every malformed fixture is rejected naming the file", "[datasets]") {
  const Json expected = LoadJsonFile(kFixtures / "expected.json");
  const Json& malformed = expected.at("malformed");
  // Every file on disk has an expectation, so a fixture cannot be added and forgotten.
  size_t on_disk = 0;
  for (const auto& entry : fs::directory_iterator(kFixtures / "malformed")) {
    ++on_disk;
    CHECK(malformed.contains(entry.path().filename().string()));
  }
  REQUIRE(on_disk == malformed.size());
  REQUIRE(on_disk >= 20);
  for (const auto& [file_name, e] : malformed.items()) {
    INFO(file_name);
    const fs::path path = kFixtures / "malformed" / file_name;
    const std::string message = InputErrorMessage([&] { SafeTensorsFile::Load(path); });
    INFO(message);
    REQUIRE_FALSE(message.empty());
    CHECK(message.rfind(path.string() + ": ", 0) == 0);
    CHECK(Contains(message, e.at("message").get<std::string>()));
    if (e.contains("tensor")) CHECK(Contains(message, "tensor '" + e.at("tensor").get<std::string>() + "'"));
    CHECK(message.find('\n') == std::string::npos);
  }
}

TEST_CASE("safetensors: missing files, directories and tensors are InputErrors", "[datasets]") {
  test::TempDir dir;
  CHECK(Contains(InputErrorMessage([&] { SafeTensorsFile::Load(dir / "none.safetensors"); }),
                 "none.safetensors: file not found"));
  CHECK(Contains(InputErrorMessage([&] { SafeTensorsFile::Load(dir.path()); }), "is a directory"));
  const fs::path path = kFixtures / "valid" / "all_dtypes.safetensors";
  const SafeTensorsFile file = SafeTensorsFile::Load(path);
  const std::string message = InputErrorMessage([&] { file.get("nope"); });
  CHECK(Contains(message, path.string()));
  CHECK(Contains(message, "no tensor named 'nope'"));
  CHECK_FALSE(file.contains("nope"));
}

TEST_CASE("safetensors: random tensors of every dtype round-trip through the writer", "[datasets]") {
  test::TempDir dir;
  std::mt19937_64 rng(0x5AFE7E45);
  for (int round = 0; round < 3; ++round) {
    std::vector<SafeTensor> tensors;
    for (const DType dtype : kAllDTypes) {
      SafeTensor t;
      t.name = std::string("layer") + std::to_string(rng() % 100) + "." + DTypeName(dtype);
      t.dtype = dtype;
      const int rank = static_cast<int>(rng() % 4);
      for (int r = 0; r < rank; ++r) t.shape.push_back(static_cast<int64_t>(1 + rng() % 5));
      if (round == 1 && dtype == DType::kF32) t.shape = {3, 0, 2};
      t.data = RandomBytes(rng, dtype, t.numel());
      tensors.push_back(t);
    }
    const std::map<std::string, std::string> metadata = {{"round", std::to_string(round)},
                                                         {"text", "h\xC3\xA9llo \"quoted\""}};
    const fs::path path = dir / ("round" + std::to_string(round) + ".safetensors");
    SaveSafeTensors(path, tensors, round == 2 ? std::map<std::string, std::string>{} : metadata);
    CHECK_FALSE(fs::exists(path.string() + ".tmp"));

    const SafeTensorsFile file = SafeTensorsFile::Load(path);
    CHECK(file.metadata() == (round == 2 ? std::map<std::string, std::string>{} : metadata));
    REQUIRE(file.names().size() == tensors.size());
    for (const SafeTensor& t : tensors) {
      INFO(t.name);
      const SafeTensor& back = file.get(t.name);
      CHECK(back.dtype == t.dtype);
      CHECK(back.shape == t.shape);
      CHECK(back.data == t.data);
    }
    // Padded header and element-aligned tensors, as the reference writer does.
    const auto [header_size, header] = ReadHeader(path);
    CHECK(header_size % 8 == 0);
    for (const auto& item : header.items()) {
      if (item.key() == "__metadata__") continue;
      const auto dtype = ParseDType(item.value().at("dtype").get<std::string>());
      REQUIRE(dtype.has_value());
      CHECK(item.value().at("data_offsets")[0].get<uint64_t>() % DTypeSize(*dtype) == 0);
    }
  }
}

TEST_CASE("safetensors: the writer rejects bad tensors by name and leaves no file", "[datasets]") {
  test::TempDir dir;
  const fs::path path = dir / "bad.safetensors";
  SafeTensor good{"good", DType::kI16, {2}, {1, 2, 3, 4}};
  SafeTensor short_data{"short", DType::kF32, {2, 2}, std::vector<uint8_t>(12, 7)};
  CHECK(Contains(InputErrorMessage([&] { SaveSafeTensors(path, {good, short_data}); }),
                 "tensor 'short': shape [2, 2] of F32 does not match 12 data bytes"));
  SafeTensor negative{"neg", DType::kU8, {-1}, {}};
  CHECK(Contains(InputErrorMessage([&] { SaveSafeTensors(path, {negative}); }), "tensor 'neg': negative"));
  CHECK(Contains(InputErrorMessage([&] { SaveSafeTensors(path, {good, good}); }),
                 "tensor 'good': duplicate tensor name"));
  SafeTensor reserved = good;
  reserved.name = "__metadata__";
  CHECK(Contains(InputErrorMessage([&] { SaveSafeTensors(path, {reserved}); }), "reserved"));
  SafeTensor unnamed = good;
  unnamed.name = "";
  CHECK(Contains(InputErrorMessage([&] { SaveSafeTensors(path, {unnamed}); }), "empty name"));
  CHECK_FALSE(fs::exists(path));
  REQUIRE_THROWS_AS(SaveSafeTensors(dir / "no_such_dir" / "x.safetensors", {good}), RunError);
}

TEST_CASE("safetensors: saving replaces an existing file", "[datasets]") {
  test::TempDir dir;
  const fs::path path = dir / "w.safetensors";
  SaveSafeTensors(path, {SafeTensor{"a", DType::kU8, {3}, {9, 8, 7}}});
  SaveSafeTensors(path, {SafeTensor{"b", DType::kI8, {1}, {200}}}, {{"k", "v"}});
  const SafeTensorsFile file = SafeTensorsFile::Load(path);
  CHECK(file.names() == std::vector<std::string>{"b"});
  CHECK(file.get("b").data == std::vector<uint8_t>{200});
  CHECK(file.metadata().at("k") == "v");
}

TEST_CASE("safetensors: an empty file list writes a readable file", "[datasets]") {
  test::TempDir dir;
  SaveSafeTensors(dir / "e.safetensors", {});
  const SafeTensorsFile file = SafeTensorsFile::Load(dir / "e.safetensors");
  CHECK(file.names().empty());
  CHECK(file.metadata().empty());
}

}  // namespace
}  // namespace sparsetune
