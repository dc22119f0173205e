#include "datasets/safetensors.h"

#include <algorithm>
#include <array>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <system_error>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/json_reader.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors element bytes are little-endian; this reader copies them as they are"
#endif

namespace sparsetune {

namespace {

namespace fs = std::filesystem;

// The reference implementation refuses headers above 100 MB; a larger length is a corrupt file.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};

constexpr std::array<DTypeInfo, 13> kDTypes = {{
    {DType::kF64, "F64", 8},
    {DType::kF32, "F32", 4},
    {DType::kF16, "F16", 2},
    {DType::kBF16, "BF16", 2},
    {DType::kI64, "I64", 8},
    {DType::kI32, "I32", 4},
    {DType::kI16, "I16", 2},
    {DType::kI8, "I8", 1},
    {DType::kU64, "U64", 8},
    {DType::kU32, "U32", 4},
    {DType::kU16, "U16", 2},
    {DType::kU8, "U8", 1},
    {DType::kBool, "BOOL", 1},
}};

const DTypeInfo& Info(DType dtype) {
  for (const auto& info : kDTypes) {
    if (info.dtype == dtype) return info;
  }
  throw std::logic_error("DType without a table entry");
}

[[noreturn]] void Fail(const fs::path& path, const std::string& what) {
  throw InputError(path.string() + ": " + what);
}

[[noreturn]] void FailTensor(const fs::path& path, const std::string& name,
                             const std::string& what) {
  Fail(path, "tensor '" + name + "': " + what);
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

// numel * element size, or nullopt when the product does not fit in 64 bits.
std::optional<uint64_t> ByteSize(const std::vector<int64_t>& shape, size_t element_size) {
  uint64_t bytes = element_size;
  for (const int64_t dim : shape) {
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(dim), &bytes)) return std::nullopt;
  }
  return bytes;
}

// A JSON integer >= 0 that fits in int64 (floats such as 2.0 are rejected: the format has none).
std::optional<uint64_t> NonNegativeInteger(const Json& v) {
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return u;
  } else if (v.is_number_integer() && v.get<int64_t>() >= 0) {
    return static_cast<uint64_t>(v.get<int64_t>());
  }
  return std::nullopt;
}

// Parses the header, reporting the first key repeated inside any one object (nlohmann would
// silently keep one of the two values).
Json ParseHeader(const fs::path& path, const std::string& text) {
  std::vector<std::set<std::string>> open_objects;
  std::optional<std::string> duplicate;
  auto on_event = [&](int, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
        open_objects.emplace_back();
        break;
      case Json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case Json::parse_event_t::key: {
        const std::string key = parsed.get<std::string>();
        if (!open_objects.empty() && !open_objects.back().insert(key).second && !duplicate) {
          duplicate = key;
        }
        break;
      }
      default:
        break;
    }
    return true;
  };
  Json header;
  try {
    header = Json::parse(text, on_event);
  } catch (const Json::exception& e) {
    std::string detail = e.what();
    const auto pos = detail.find("] ");
    if (pos != std::string::npos) detail = detail.substr(pos + 2);
    Fail(path, "header is not valid JSON: " + detail);
  }
  if (duplicate) Fail(path, "header: duplicate key '" + *duplicate + "'");
  if (!header.is_object()) Fail(path, "header is not a JSON object (got " + Describe(header) + ")");
  return header;
}

// One header entry, checked against the buffer size.
struct Entry {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin;
  uint64_t end;
};

Entry ParseEntry(const fs::path& path, const std::string& name, const Json& value,
                 uint64_t buffer_size) {
  if (!value.is_object()) {
    FailTensor(path, name, "entry must be an object with dtype, shape and data_offsets (got " +
                               Describe(value) + ")");
  }
  for (const auto& item : value.items()) {
    if (item.key() != "dtype" && item.key() != "shape" && item.key() != "data_offsets") {
      FailTensor(path, name, "unknown field '" + item.key() + "'");
    }
  }
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!value.contains(field)) FailTensor(path, name, std::string("missing field '") + field + "'");
  }
  Entry entry;
  entry.name = name;

  const Json& dtype = value.at("dtype");
  if (!dtype.is_string()) FailTensor(path, name, "dtype must be a string (got " + Describe(dtype) + ")");
  const auto parsed = ParseDType(dtype.get<std::string>());
  if (!parsed) FailTensor(path, name, "unknown dtype '" + dtype.get<std::string>() + "'");
  entry.dtype = *parsed;

  const Json& shape = value.at("shape");
  if (!shape.is_array()) {
    FailTensor(path, name, "shape must be a list of non-negative integers (got " + Describe(shape) + ")");
  }
  for (const Json& dim : shape) {
    const auto d = NonNegativeInteger(dim);
    if (!d) {
      FailTensor(path, name, "shape must be a list of non-negative integers (got " + Describe(shape) + ")");
    }
    entry.shape.push_back(static_cast<int64_t>(*d));
  }

  const Json& offsets = value.at("data_offsets");
  std::optional<uint64_t> begin, end;
  if (offsets.is_array() && offsets.size() == 2) {
    begin = NonNegativeInteger(offsets[0]);
    end = NonNegativeInteger(offsets[1]);
  }
  if (!begin || !end) {
    FailTensor(path, name, "data_offsets must be [begin, end] with non-negative integers (got " +
                               Describe(offsets) + ")");
  }
  if (*begin > *end || *end > buffer_size) {
    FailTensor(path, name, "data_offsets [" + std::to_string(*begin) + ", " + std::to_string(*end) +
                               "] must satisfy begin <= end <= " + std::to_string(buffer_size) +
                               " (the data buffer size)");
  }
  entry.begin = *begin;
  entry.end = *end;

  const auto bytes = ByteSize(entry.shape, DTypeSize(entry.dtype));
  if (!bytes || *bytes != entry.end - entry.begin) {
    FailTensor(path, name, "shape " + ShapeText(entry.shape) + " of " + DTypeName(entry.dtype) +
                               " needs " + (bytes ? std::to_string(*bytes) : std::string("more than 2^64")) +
                               " bytes but data_offsets span " + std::to_string(entry.end - entry.begin));
  }
  return entry;
}

// The spec requires the tensors to tile the buffer: sorted by offset, each one starts where the
// previous one ended and the last one ends at the buffer's end.
void CheckCoverage(const fs::path& path, std::vector<Entry>& entries, uint64_t buffer_size) {
  std::stable_sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t covered = 0;
  const Entry* previous = nullptr;
  for (const Entry& e : entries) {
    if (e.begin < covered) {
      FailTensor(path, e.name, "data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) +
                                   "] overlap tensor '" + previous->name + "'");
    }
    if (e.begin > covered) {
      Fail(path, "bytes [" + std::to_string(covered) + ", " + std::to_string(e.begin) +
                     ") of the data buffer belong to no tensor (a hole before tensor '" + e.name + "')");
    }
    covered = e.end;
    previous = &e;
  }
  if (covered != buffer_size) {
    Fail(path, "bytes [" + std::to_string(covered) + ", " + std::to_string(buffer_size) +
                   ") at the end of the data buffer belong to no tensor");
  }
}

}  // namespace

size_t DTypeSize(DType dtype) { return Info(dtype).size; }

const char* DTypeName(DType dtype) { return Info(dtype).name; }

std::optional<DType> ParseDType(const std::string& name) {
  for (const auto& info : kDTypes) {
    if (name == info.name) return info.dtype;
  }
  return std::nullopt;
}

int64_t SafeTensor::numel() const {
  int64_t n = 1;
  for (const int64_t dim : shape) n *= dim;
  return n;
}

SafeTensorsFile SafeTensorsFile::Load(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) Fail(path, "file not found");
  if (fs::is_directory(path, ec)) Fail(path, "is a directory, expected a safetensors file");
  const uint64_t file_size = fs::file_size(path, ec);
  if (ec) Fail(path, "cannot read the file size: " + ec.message());
  std::ifstream in(path, std::ios::binary);
  if (!in) Fail(path, "cannot open for reading");
  if (file_size < 8) {
    Fail(path, "file has " + std::to_string(file_size) +
                   " bytes, fewer than the 8-byte header length field");
  }

  unsigned char length_field[8];
  in.read(reinterpret_cast<char*>(length_field), 8);
  if (!in) Fail(path, "read failed");
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= static_cast<uint64_t>(length_field[i]) << (8 * i);
  if (header_size > kMaxHeaderBytes) {
    Fail(path, "header length " + std::to_string(header_size) + " is absurd (limit " +
                   std::to_string(kMaxHeaderBytes) + " bytes); not a safetensors file?");
  }
  if (header_size > file_size - 8) {
    Fail(path, "header length " + std::to_string(header_size) + " exceeds the " +
                   std::to_string(file_size - 8) + " bytes after the length field");
  }
  std::string text(header_size, '\0');
  in.read(text.data(), static_cast<std::streamsize>(header_size));
  if (!in) Fail(path, "read failed in the header");
  const uint64_t buffer_size = file_size - 8 - header_size;

  const Json header = ParseHeader(path, text);
  SafeTensorsFile file;
  file.path_ = path;
  std::vector<Entry> entries;
  for (const auto& item : header.items()) {
    if (item.key() == kMetadataKey) {
      if (!item.value().is_object()) {
        Fail(path, "'__metadata__' must be an object of strings (got " + Describe(item.value()) + ")");
      }
      for (const auto& m : item.value().items()) {
        if (!m.value().is_string()) {
          Fail(path, "'__metadata__' entry '" + m.key() + "' must be a string (got " +
                         Describe(m.value()) + ")");
        }
        file.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    entries.push_back(ParseEntry(path, item.key(), item.value(), buffer_size));
  }
  CheckCoverage(path, entries, buffer_size);

  // Entries now tile the buffer in order, so one sequential pass reads every byte exactly once.
  for (const Entry& e : entries) {
    SafeTensor tensor;
    tensor.name = e.name;
    tensor.dtype = e.dtype;
    tensor.shape = e.shape;
    tensor.data.resize(e.end - e.begin);
    if (!tensor.data.empty()) {
      in.read(reinterpret_cast<char*>(tensor.data.data()), static_cast<std::streamsize>(tensor.data.size()));
      if (!in) FailTensor(path, e.name, "read failed");
    }
    if (e.dtype == DType::kBool) {
      for (const uint8_t byte : tensor.data) {
        if (byte > 1) {
          FailTensor(path, e.name, "BOOL element has byte value " + std::to_string(byte) + " (must be 0 or 1)");
        }
      }
    }
    file.names_.push_back(e.name);
    file.tensors_.emplace(e.name, std::move(tensor));
  }
  return file;
}

const SafeTensor& SafeTensorsFile::get(const std::string& name) const {
  const auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    std::string known;
    for (size_t i = 0; i < names_.size() && i < 8; ++i) known += (i ? ", " : "") + names_[i];
    if (names_.size() > 8) known += ", ...";
    Fail(path_, "no tensor named '" + name + "' (has: " + (known.empty() ? "none" : known) + ")");
  }
  return it->second;
}

void SaveSafeTensors(const fs::path& path, const std::vector<SafeTensor>& tensors,
                     const std::map<std::string, std::string>& metadata) {
  std::set<std::string> seen;
  for (const SafeTensor& t : tensors) {
    if (t.name.empty()) Fail(path, "cannot write a tensor with an empty name");
    if (t.name == kMetadataKey) Fail(path, "'__metadata__' is reserved and cannot name a tensor");
    if (!seen.insert(t.name).second) FailTensor(path, t.name, "duplicate tensor name");
    for (const int64_t dim : t.shape) {
      if (dim < 0) FailTensor(path, t.name, "negative dimension in shape " + ShapeText(t.shape));
    }
    const auto bytes = ByteSize(t.shape, DTypeSize(t.dtype));
    if (!bytes || *bytes != t.data.size()) {
      FailTensor(path, t.name, "shape " + ShapeText(t.shape) + " of " + DTypeName(t.dtype) +
                                   " does not match " + std::to_string(t.data.size()) + " data bytes");
    }
  }

  // Largest elements first: with an 8-byte aligned header every tensor starts on a multiple of
  // its element size, so readers that map the file can view the data in place.
  std::vector<const SafeTensor*> order;
  for (const SafeTensor& t : tensors) order.push_back(&t);
  std::stable_sort(order.begin(), order.end(), [](const SafeTensor* a, const SafeTensor* b) {
    const size_t sa = DTypeSize(a->dtype), sb = DTypeSize(b->dtype);
    return sa != sb ? sa > sb : a->name < b->name;
  });

  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  uint64_t offset = 0;
  for (const SafeTensor* t : order) {
    header[t->name] = {{"dtype", DTypeName(t->dtype)},
                       {"shape", t->shape},
                       {"data_offsets", {offset, offset + t->data.size()}}};
    offset += t->data.size();
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::ordered_json::exception& e) {
    Fail(path, std::string("a tensor name or metadata string is not valid UTF-8: ") + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');

  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw RunError(path.string() + ": cannot open for writing");
    unsigned char length_field[8];
    for (int i = 0; i < 8; ++i) length_field[i] = static_cast<unsigned char>(text.size() >> (8 * i));
    out.write(reinterpret_cast<const char*>(length_field), 8);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    for (const SafeTensor* t : order) {
      out.write(reinterpret_cast<const char*>(t->data.data()), static_cast<std::streamsize>(t->data.size()));
    }
    out.flush();
    if (!out) {
      out.close();
      std::error_code ignored;
      fs::remove(tmp, ignored);
      throw RunError(path.string() + ": write failed");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw RunError(path.string() + ": cannot rename the temporary file into place: " + ec.message());
  }
}

}  // namespace sparsetune
