#include <random>

#include "core/error.h"
#include "core/json_reader.h"
#include "tests/catch.h"
#include "tests/test_util.h"

using sparsetune::InputError;
using sparsetune::Json;
using sparsetune::JsonReader;

namespace {

// Message of the InputError `f` throws ("" when it does not throw).
template <class F>
std::string ErrorOf(F&& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("LoadJsonFile reports missing files and syntax errors with position", "[core]") {
  sparsetune::test::TempDir dir;
  CHECK(ErrorOf([&] { sparsetune::LoadJsonFile(dir / "nope.json"); }) ==
        (dir / "nope.json").string() + ": file not found");
  CHECK(ErrorOf([&] { sparsetune::LoadJsonFile(dir.path()); }).find("is a directory") !=
        std::string::npos);
  sparsetune::test::WriteText(dir / "bad.json", "{\n  \"a\": 1,\n  \"b\": }\n");
  const std::string msg = ErrorOf([&] { sparsetune::LoadJsonFile(dir / "bad.json"); });
  CHECK(msg.find("bad.json: invalid JSON at line 3") != std::string::npos);
}

TEST_CASE("SaveJsonFile round-trips random documents", "[core]") {
  sparsetune::test::TempDir dir;
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> u(-1e6, 1e6);
  Json doc;
  for (int i = 0; i < 20; ++i) doc["k" + std::to_string(i)] = u(rng);
  doc["nested"] = {{"list", {u(rng), u(rng)}}, {"s", "text"}};
  sparsetune::SaveJsonFile(dir / "x.json", doc);
  CHECK(sparsetune::LoadJsonFile(dir / "x.json") == doc);
  CHECK_THROWS_AS(sparsetune::SaveJsonFile(dir / "no-such-dir" / "x.json", doc),
                  sparsetune::RunError);
}

TEST_CASE("JsonReader reads typed fields and rejects bad ones by name", "[core]") {
  const Json doc = Json::parse(R"({"n": 3, "x": 0.5, "s": "tiles", "b": true,
    "list": [0.1, 0.2], "ints": [1, 2, 3], "obj": {"inner": 4}, "arr": [{"v": 1}, {"v": 2}],
    "p": "sub/file.json"})");
  JsonReader r(doc, "cfg.json", "", "/base");
  CHECK(r.integer("n", 0, 10) == 3);
  CHECK(r.number("x", 0.0, 1.0) == Approx(0.5));
  CHECK(r.choice("s", {"raster", "tiles"}) == "tiles");
  CHECK(r.boolean("b"));
  CHECK(r.numbers("list", 0.0, 1.0).size() == 2);
  CHECK(r.integers("ints", 0, 5, 3, 3) == std::vector<int64_t>{1, 2, 3});
  JsonReader obj = r.object("obj");
  CHECK(obj.integer("inner", 0, 10) == 4);
  obj.finish();
  auto arr = r.objects("arr");
  REQUIRE(arr.size() == 2);
  CHECK(arr[1].integer("v", 0, 5) == 2);
  CHECK(r.path("p") == std::filesystem::path("/base/sub/file.json"));
  CHECK(r.integer("absent", 42, 0, 100) == 42);
  REQUIRE_NOTHROW(r.finish());

  JsonReader bad(doc, "cfg.json");
  CHECK(ErrorOf([&] { bad.integer("n", 5, 10); }) ==
        "cfg.json: field 'n': must be an integer in [5, 10] (got 3)");
  CHECK(ErrorOf([&] { bad.integer("x", 0, 10); }) ==
        "cfg.json: field 'x': must be an integer (got 0.5)");
  CHECK(ErrorOf([&] { bad.choice("s", {"raster"}); }) ==
        "cfg.json: field 's': must be one of raster (got \"tiles\")");
  CHECK(ErrorOf([&] { bad.string("n"); }) == "cfg.json: field 'n': must be a string (got 3)");
  CHECK(ErrorOf([&] { bad.numbers("list", 0.15, 1.0); }) ==
        "cfg.json: field 'list[0]': must be a number in [0.15, 1] (got 0.1)");
  CHECK(ErrorOf([&] { bad.integers("ints", 0, 5, 2, 2); }) ==
        "cfg.json: field 'ints': must have exactly 2 elements (got 3)");
  CHECK(ErrorOf([&] { bad.raw("missing"); }) ==
        "cfg.json: field 'missing': is required but missing");
  CHECK(ErrorOf([&] { bad.object("obj").finish(); }) ==
        "cfg.json: field 'obj.inner': unknown key");
  CHECK(ErrorOf([&] { bad.objects("arr")[0].finish(); }) ==
        "cfg.json: field 'arr[0].v': unknown key");
  CHECK(ErrorOf([&] { bad.object("n"); }) == "cfg.json: field 'n': must be an object (got 3)");
}

TEST_CASE("JsonReader::finish names the first unknown key", "[core]") {
  const Json doc = Json::parse(R"({"known": 1, "typo_key": 2})");
  JsonReader r(doc, "c.json");
  r.integer("known", 0, 5);
  CHECK(ErrorOf([&] { r.finish(); }) == "c.json: field 'typo_key': unknown key");
  CHECK(ErrorOf([&] { JsonReader(Json::array(), "c.json"); }) ==
        "c.json: document: must be an object (got [])");
}
