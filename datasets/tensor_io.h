// Conversion between safetensors tensors (datasets/safetensors.h) and torch tensors.
//
// Kept apart from the reader/writer so that code which only moves bytes does not need libtorch.
#pragma once

#include <filesystem>
#include <map>
#include <string>

#include <torch/torch.h>

#include "datasets/safetensors.h"

namespace sparsetune {

// A new CPU tensor holding a copy of `tensor`'s elements.
torch::Tensor ToTorch(const SafeTensor& tensor);

// A contiguous CPU copy of `tensor` (any device) under `name`. Dtypes without a safetensors
// spelling here (complex, float8, quantized, ...) are a ShapeError naming the tensor.
SafeTensor FromTorch(const std::string& name, const torch::Tensor& tensor);

// Every tensor of a safetensors file, by name; `metadata` (when given) receives "__metadata__".
std::map<std::string, torch::Tensor> LoadTensors(const std::filesystem::path& path,
                                                 std::map<std::string, std::string>* metadata = nullptr);

// Writes `tensors` through SaveSafeTensors (atomic; see there).
void SaveTensors(const std::filesystem::path& path, const std::map<std::string, torch::Tensor>& tensors,
                 const std::map<std::string, std::string>& metadata = {});

}  // namespace sparsetune
