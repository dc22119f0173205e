// safetensors files: reading and writing without torch.
//
// Layout: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON, then the data buffer.
// The JSON is an object mapping tensor names to {"dtype", "shape", "data_offsets": [begin, end]}
// (offsets in bytes relative to the buffer start) plus an optional "__metadata__" object of
// string -> string. The tensors must cover the buffer exactly: no holes, no overlaps, no
// trailing bytes. Element bytes are little-endian (this code requires a little-endian host).
//
// Every problem with a file is an InputError whose one-line message starts with the file name and,
// where one tensor is at fault, names it: "w.safetensors: tensor 'x': data_offsets ...".
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace sparsetune {

// Element types of the safetensors format that we read and write.
enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU64, kU32, kU16, kU8, kBool };

// Bytes per element.
size_t DTypeSize(DType dtype);
// The format's spelling: "F32", "BF16", "BOOL", ...
const char* DTypeName(DType dtype);
// Inverse of DTypeName; nullopt for an unknown spelling.
std::optional<DType> ParseDType(const std::string& name);

// One named tensor with its raw little-endian element bytes.
struct SafeTensor {
  std::string name;            // unique within a file; never "__metadata__"
  DType dtype = DType::kF32;   // element type
  std::vector<int64_t> shape;  // dimension sizes, each >= 0; empty for a scalar
  std::vector<uint8_t> data;   // numel() * DTypeSize(dtype) bytes, row-major

  // Product of shape (1 for a scalar).
  int64_t numel() const;
};

// A fully validated, fully loaded safetensors file.
class SafeTensorsFile {
 public:
  // Reads and validates `path`; throws InputError naming the file (and tensor) on any problem.
  static SafeTensorsFile Load(const std::filesystem::path& path);

  // Tensor names in buffer order.
  const std::vector<std::string>& names() const { return names_; }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  // The named tensor; throws InputError naming the file and the missing tensor.
  const SafeTensor& get(const std::string& name) const;
  // The "__metadata__" entries (empty when the file has none).
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  std::vector<std::string> names_;
  std::map<std::string, SafeTensor> tensors_;
  std::map<std::string, std::string> metadata_;
};

// Writes `tensors` and `metadata` to `path` atomically (temporary file in the same folder, then
// rename). The header is padded with spaces to a multiple of 8 bytes and tensors are laid out by
// decreasing element size, so every tensor starts aligned to its element size. A bad tensor
// (empty or duplicate name, negative dimension, data size not matching the shape) is an
// InputError naming it; an I/O failure is a RunError naming the path.
void SaveSafeTensors(const std::filesystem::path& path, const std::vector<SafeTensor>& tensors,
                     const std::map<std::string, std::string>& metadata = {});

}  // namespace sparsetune
