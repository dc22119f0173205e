#include "core/json_reader.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <system_error>

#include "core/error.h"

namespace sparsetune {

namespace {

// Line and column (1-based) of byte offset `pos` in `text`.
std::pair<size_t, size_t> LineColumn(const std::string& text, size_t pos) {
  size_t line = 1, column = 1;
  for (size_t i = 0; i < pos && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return {line, column};
}

bool IsInteger(const Json& v) {
  if (v.is_number_integer() || v.is_number_unsigned()) return true;
  if (v.is_number_float()) {
    const double d = v.get<double>();
    return std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e15;
  }
  return false;
}

}  // namespace

Json ParseJsonText(const std::string& text, const std::string& source) {
  try {
    return Json::parse(text);
  } catch (const Json::parse_error& e) {
    const auto [line, column] = LineColumn(text, e.byte == 0 ? 0 : e.byte - 1);
    std::string detail = e.what();
    // nlohmann's message is "[json.exception.parse_error.101] parse error at line 1, column 2: ...";
    // keep the part after the position, which says what was expected.
    const auto colon = detail.rfind(": ");
    if (colon != std::string::npos) detail = detail.substr(colon + 2);
    std::ostringstream os;
    os << source << ": invalid JSON at line " << line << ", column " << column << ": " << detail;
    throw InputError(os.str());
  }
}

Json LoadJsonFile(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) {
    throw InputError(path.string() + ": file not found");
  }
  if (std::filesystem::is_directory(path, ec)) {
    throw InputError(path.string() + ": is a directory, expected a JSON file");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path.string() + ": cannot open for reading");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return ParseJsonText(buffer.str(), path.string());
}

void SaveJsonFile(const std::filesystem::path& path, const Json& value, int indent) {
  const std::filesystem::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw RunError(path.string() + ": cannot open for writing");
    out << value.dump(indent) << "\n";
    out.flush();
    if (!out) throw RunError(path.string() + ": write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw RunError(path.string() + ": cannot replace file: " + ec.message());
}

std::string Describe(const Json& value) {
  std::string s = value.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

JsonReader::JsonReader(const Json& value, std::string source, std::string path,
                       std::filesystem::path base_dir)
    : value_(&value),
      source_(std::move(source)),
      path_(std::move(path)),
      base_dir_(std::move(base_dir)) {
  if (!value_->is_object()) {
    throw InputError(source_ + ": " + (path_.empty() ? std::string("document") : "field '" + path_ + "'") +
                     ": must be an object (got " + Describe(*value_) + ")");
  }
}

std::string JsonReader::field(const std::string& key) const {
  if (key.empty()) return path_;
  if (path_.empty()) return key;
  if (!key.empty() && key[0] == '[') return path_ + key;
  return path_ + "." + key;
}

void JsonReader::fail(const std::string& key, const std::string& what) const {
  const std::string name = field(key);
  if (name.empty()) throw InputError(source_ + ": " + what);
  throw InputError(source_ + ": field '" + name + "': " + what);
}

bool JsonReader::has(const std::string& key) const { return value_->contains(key); }

const Json& JsonReader::require(const std::string& key) {
  read_.insert(key);
  auto it = value_->find(key);
  if (it == value_->end()) fail(key, "is required but missing");
  return *it;
}

const Json& JsonReader::raw(const std::string& key) { return require(key); }

const Json* JsonReader::find(const std::string& key) {
  read_.insert(key);
  auto it = value_->find(key);
  return it == value_->end() ? nullptr : &*it;
}

int64_t JsonReader::integer(const std::string& key, int64_t min, int64_t max) {
  const Json& v = require(key);
  if (!IsInteger(v)) fail(key, "must be an integer (got " + Describe(v) + ")");
  const int64_t x = v.is_number_float() ? static_cast<int64_t>(v.get<double>()) : v.get<int64_t>();
  if (x < min || x > max) {
    std::ostringstream os;
    os << "must be an integer in [" << min << ", " << max << "] (got " << x << ")";
    if (max == std::numeric_limits<int64_t>::max()) {
      os.str("");
      os << "must be an integer >= " << min << " (got " << x << ")";
    }
    fail(key, os.str());
  }
  return x;
}

int64_t JsonReader::integer(const std::string& key, int64_t fallback, int64_t min, int64_t max) {
  if (!has(key)) {
    read_.insert(key);
    return fallback;
  }
  return integer(key, min, max);
}

double JsonReader::number(const std::string& key, double min, double max) {
  const Json& v = require(key);
  if (!v.is_number()) fail(key, "must be a number (got " + Describe(v) + ")");
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < min || x > max) {
    std::ostringstream os;
    os << "must be a number in [" << min << ", " << max << "] (got " << x << ")";
    fail(key, os.str());
  }
  return x;
}

double JsonReader::number(const std::string& key, double fallback, double min, double max) {
  if (!has(key)) {
    read_.insert(key);
    return fallback;
  }
  return number(key, min, max);
}

bool JsonReader::boolean(const std::string& key) {
  const Json& v = require(key);
  if (!v.is_boolean()) fail(key, "must be true or false (got " + Describe(v) + ")");
  return v.get<bool>();
}

bool JsonReader::boolean(const std::string& key, bool fallback) {
  if (!has(key)) {
    read_.insert(key);
    return fallback;
  }
  return boolean(key);
}

std::string JsonReader::string(const std::string& key) {
  const Json& v = require(key);
  if (!v.is_string()) fail(key, "must be a string (got " + Describe(v) + ")");
  return v.get<std::string>();
}

std::string JsonReader::string(const std::string& key, const std::string& fallback) {
  if (!has(key)) {
    read_.insert(key);
    return fallback;
  }
  return string(key);
}

std::string JsonReader::choice(const std::string& key, std::initializer_list<const char*> options) {
  const std::string s = string(key);
  std::string list;
  for (const char* o : options) {
    if (s == o) return s;
    list += list.empty() ? "" : ", ";
    list += o;
  }
  fail(key, "must be one of " + list + " (got \"" + s + "\")");
}

std::string JsonReader::choice(const std::string& key, const std::string& fallback,
                               std::initializer_list<const char*> options) {
  if (!has(key)) {
    read_.insert(key);
    return fallback;
  }
  return choice(key, options);
}

std::filesystem::path JsonReader::path(const std::string& key) {
  const std::string s = string(key);
  if (s.empty()) fail(key, "must be a non-empty path");
  std::filesystem::path p(s);
  if (p.is_relative() && !base_dir_.empty()) p = base_dir_ / p;
  return p.lexically_normal();
}

std::optional<std::filesystem::path> JsonReader::optional_path(const std::string& key) {
  if (!has(key) || (*value_)[key].is_null()) {
    read_.insert(key);
    return std::nullopt;
  }
  return path(key);
}

std::vector<double> JsonReader::numbers(const std::string& key, double min, double max,
                                        size_t min_size, size_t max_size) {
  const Json& v = require(key);
  if (!v.is_array()) fail(key, "must be an array of numbers (got " + Describe(v) + ")");
  if (v.size() < min_size || v.size() > max_size) {
    std::ostringstream os;
    os << "must have ";
    if (max_size == std::numeric_limits<size_t>::max()) {
      os << "at least " << min_size;
    } else if (min_size == max_size) {
      os << "exactly " << min_size;
    } else {
      os << "between " << min_size << " and " << max_size;
    }
    os << " elements (got " << v.size() << ")";
    fail(key, os.str());
  }
  std::vector<double> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string at = key + "[" + std::to_string(i) + "]";
    if (!v[i].is_number()) fail(at, "must be a number (got " + Describe(v[i]) + ")");
    const double x = v[i].get<double>();
    if (!std::isfinite(x) || x < min || x > max) {
      std::ostringstream os;
      os << "must be a number in [" << min << ", " << max << "] (got " << x << ")";
      fail(at, os.str());
    }
    out.push_back(x);
  }
  return out;
}

std::vector<int64_t> JsonReader::integers(const std::string& key, int64_t min, int64_t max,
                                          size_t min_size, size_t max_size) {
  const std::vector<double> values = numbers(key, static_cast<double>(min),
                                             static_cast<double>(max), min_size, max_size);
  std::vector<int64_t> out;
  out.reserve(values.size());
  const Json& v = (*value_)[key];
  for (size_t i = 0; i < values.size(); ++i) {
    if (!IsInteger(v[i])) {
      fail(key + "[" + std::to_string(i) + "]", "must be an integer (got " + Describe(v[i]) + ")");
    }
    out.push_back(static_cast<int64_t>(values[i]));
  }
  return out;
}

std::vector<std::string> JsonReader::strings(const std::string& key, size_t min_size) {
  const Json& v = require(key);
  if (!v.is_array()) fail(key, "must be an array of strings (got " + Describe(v) + ")");
  if (v.size() < min_size) {
    fail(key, "must have at least " + std::to_string(min_size) + " elements (got " +
                  std::to_string(v.size()) + ")");
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_string()) {
      fail(key + "[" + std::to_string(i) + "]", "must be a string (got " + Describe(v[i]) + ")");
    }
    out.push_back(v[i].get<std::string>());
  }
  return out;
}

JsonReader JsonReader::object(const std::string& key) {
  const Json& v = require(key);
  if (!v.is_object()) fail(key, "must be an object (got " + Describe(v) + ")");
  return JsonReader(v, source_, field(key), base_dir_);
}

std::optional<JsonReader> JsonReader::optional_object(const std::string& key) {
  if (!has(key)) {
    read_.insert(key);
    return std::nullopt;
  }
  return object(key);
}

std::vector<JsonReader> JsonReader::objects(const std::string& key, size_t min_size) {
  const Json& v = require(key);
  if (!v.is_array()) fail(key, "must be an array of objects (got " + Describe(v) + ")");
  if (v.size() < min_size) {
    fail(key, "must have at least " + std::to_string(min_size) + " elements (got " +
                  std::to_string(v.size()) + ")");
  }
  std::vector<JsonReader> out;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string at = field(key) + "[" + std::to_string(i) + "]";
    if (!v[i].is_object()) {
      throw InputError(source_ + ": field '" + at + "': must be an object (got " + Describe(v[i]) +
                       ")");
    }
    out.emplace_back(v[i], source_, at, base_dir_);
  }
  return out;
}

void JsonReader::finish() const {
  for (auto it = value_->begin(); it != value_->end(); ++it) {
    if (read_.count(it.key()) == 0) {
      fail(it.key(), "unknown key");
    }
  }
}

}  // namespace sparsetune
