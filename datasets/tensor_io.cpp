#include "datasets/tensor_io.h"

#include <cstring>
#include <optional>
#include <utility>
#include <vector>

#include "core/error.h"

namespace sparsetune {

namespace {

constexpr std::pair<DType, torch::ScalarType> kScalarTypes[] = {
    {DType::kF64, torch::kFloat64}, {DType::kF32, torch::kFloat32}, {DType::kF16, torch::kFloat16},
    {DType::kBF16, torch::kBFloat16}, {DType::kI64, torch::kInt64}, {DType::kI32, torch::kInt32},
    {DType::kI16, torch::kInt16},   {DType::kI8, torch::kInt8},     {DType::kU64, torch::kUInt64},
    {DType::kU32, torch::kUInt32},  {DType::kU16, torch::kUInt16},  {DType::kU8, torch::kUInt8},
    {DType::kBool, torch::kBool},
};

torch::ScalarType ToScalarType(DType dtype) {
  for (const auto& [d, s] : kScalarTypes) {
    if (d == dtype) return s;
  }
  throw std::logic_error("DType without a torch scalar type");
}

std::optional<DType> FromScalarType(torch::ScalarType type) {
  for (const auto& [d, s] : kScalarTypes) {
    if (s == type) return d;
  }
  return std::nullopt;
}

}  // namespace

torch::Tensor ToTorch(const SafeTensor& tensor) {
  torch::Tensor out = torch::empty(tensor.shape, torch::TensorOptions().dtype(ToScalarType(tensor.dtype)));
  if (static_cast<size_t>(out.nbytes()) != tensor.data.size()) {
    throw ShapeError("tensor '" + tensor.name + "': " + std::to_string(tensor.data.size()) +
                     " data bytes do not match its shape and dtype");
  }
  if (!tensor.data.empty()) std::memcpy(out.data_ptr(), tensor.data.data(), tensor.data.size());
  return out;
}

SafeTensor FromTorch(const std::string& name, const torch::Tensor& tensor) {
  if (!tensor.defined()) throw ShapeError("tensor '" + name + "': undefined tensor");
  const auto dtype = FromScalarType(tensor.scalar_type());
  if (!dtype) {
    throw ShapeError("tensor '" + name + "': dtype " + std::string(c10::toString(tensor.scalar_type())) +
                     " has no safetensors equivalent here");
  }
  const torch::Tensor cpu = tensor.detach().to(torch::kCPU).contiguous();
  SafeTensor out;
  out.name = name;
  out.dtype = *dtype;
  out.shape = cpu.sizes().vec();
  out.data.resize(cpu.nbytes());
  if (!out.data.empty()) std::memcpy(out.data.data(), cpu.data_ptr(), out.data.size());
  return out;
}

std::map<std::string, torch::Tensor> LoadTensors(const std::filesystem::path& path,
                                                 std::map<std::string, std::string>* metadata) {
  const SafeTensorsFile file = SafeTensorsFile::Load(path);
  std::map<std::string, torch::Tensor> out;
  for (const std::string& name : file.names()) out.emplace(name, ToTorch(file.get(name)));
  if (metadata != nullptr) *metadata = file.metadata();
  return out;
}

void SaveTensors(const std::filesystem::path& path, const std::map<std::string, torch::Tensor>& tensors,
                 const std::map<std::string, std::string>& metadata) {
  std::vector<SafeTensor> converted;
  converted.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) converted.push_back(FromTorch(name, tensor));
  SaveSafeTensors(path, converted, metadata);
}

}  // namespace sparsetune
