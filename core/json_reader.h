// Strict reading of JSON documents (job configs, schedules, manifests).
//
// Every field access goes through a JsonReader that remembers which keys were read, so finish()
// can reject unknown keys by name. Every error is an InputError whose one-line message names the
// file and the dotted field path, e.g.
//   configs/default.json: field 'search.population': must be an integer >= 2 (got -1)
#pragma once

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <limits>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sparsetune {

using Json = nlohmann::json;

// Parses a JSON file; a missing file or a syntax error is an InputError naming the file
// (and line/column for syntax errors).
Json LoadJsonFile(const std::filesystem::path& path);

// Parses JSON text; `source` names it in error messages.
Json ParseJsonText(const std::string& text, const std::string& source);

// Writes JSON to a file atomically (temp file + rename); failures are RunErrors.
void SaveJsonFile(const std::filesystem::path& path, const Json& value, int indent = 2);

class JsonReader {
 public:
  // `value` must outlive the reader. `source` is the file name used in messages, `path` the dotted
  // path of `value` inside it ("" for the document root), `base_dir` the folder that relative
  // paths are resolved against (usually the file's folder).
  JsonReader(const Json& value, std::string source, std::string path = "",
             std::filesystem::path base_dir = {});

  bool has(const std::string& key) const;
  // The raw value of a key (marks it read). Throws when missing.
  const Json& raw(const std::string& key);
  // The raw value or nullptr when absent (marks it read).
  const Json* find(const std::string& key);

  // Required / optional scalars with range checks.
  int64_t integer(const std::string& key, int64_t min = std::numeric_limits<int64_t>::min(),
                  int64_t max = std::numeric_limits<int64_t>::max());
  int64_t integer(const std::string& key, int64_t fallback, int64_t min, int64_t max);
  double number(const std::string& key, double min = -std::numeric_limits<double>::infinity(),
                double max = std::numeric_limits<double>::infinity());
  double number(const std::string& key, double fallback, double min, double max);
  bool boolean(const std::string& key);
  bool boolean(const std::string& key, bool fallback);
  std::string string(const std::string& key);
  std::string string(const std::string& key, const std::string& fallback);
  // A string that must be one of `options`.
  std::string choice(const std::string& key, std::initializer_list<const char*> options);
  std::string choice(const std::string& key, const std::string& fallback,
                     std::initializer_list<const char*> options);
  // A path, resolved against base_dir when relative. Existence is not checked here.
  std::filesystem::path path(const std::string& key);
  std::optional<std::filesystem::path> optional_path(const std::string& key);

  // Arrays of numbers with a per-element range check; `min_size`/`max_size` bound the length.
  std::vector<double> numbers(const std::string& key, double min, double max, size_t min_size = 0,
                              size_t max_size = std::numeric_limits<size_t>::max());
  std::vector<int64_t> integers(const std::string& key, int64_t min, int64_t max,
                                size_t min_size = 0,
                                size_t max_size = std::numeric_limits<size_t>::max());
  std::vector<std::string> strings(const std::string& key, size_t min_size = 0);

  // A required sub-object, as a reader sharing source and base_dir.
  JsonReader object(const std::string& key);
  std::optional<JsonReader> optional_object(const std::string& key);
  // The elements of a required array of objects, each as a reader ("key[3]").
  std::vector<JsonReader> objects(const std::string& key, size_t min_size = 0);

  // Rejects every key of this object that was never read. Call after reading all fields.
  void finish() const;

  // Throws an InputError naming `key` (or this object when empty) with `what`.
  [[noreturn]] void fail(const std::string& key, const std::string& what) const;
  // The dotted path of `key` under this reader.
  std::string field(const std::string& key) const;

  const Json& value() const { return *value_; }
  const std::string& source() const { return source_; }
  const std::filesystem::path& base_dir() const { return base_dir_; }

 private:
  const Json& require(const std::string& key);
  const Json* value_;
  std::string source_;
  std::string path_;
  std::filesystem::path base_dir_;
  mutable std::set<std::string> read_;
};

// A short rendering of a JSON value for error messages ("got ...").
std::string Describe(const Json& value);

}  // namespace sparsetune
