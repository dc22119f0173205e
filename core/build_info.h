// What this binary was built from and with (printed by `sparsetune --version`, stored with jobs).
#pragma once

#include <string>

namespace sparsetune {

struct BuildInfo {
  std::string version;      // sparsetune version (CMake project version)
  std::string git_commit;   // short commit at build time, "-dirty" when tracked files had changes
  std::string torch;        // libtorch version found at configure time
  bool cuda_compiled;       // CUDA kernels compiled in
  bool cupti_compiled;      // CUPTI profiler compiled in
};

const BuildInfo& GetBuildInfo();

// "0.1.0+abc123def456", the toolkit string written into schedule provenance.
inline std::string ToolkitString() {
  const BuildInfo& b = GetBuildInfo();
  return b.version + "+" + b.git_commit;
}

}  // namespace sparsetune
