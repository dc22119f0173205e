// Small helpers shared by the test executables.
#pragma once

#include <cstdio>
#include <filesystem>
#include <random>
#include <string>

namespace sparsetune::test {

// A fresh temporary directory, removed when the object goes out of scope.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("sparsetune-test-" + std::to_string(rd()) + "-" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

// Writes `text` to `path`.
inline void WriteText(const std::filesystem::path& path, const std::string& text) {
  std::FILE* f = std::fopen(path.string().c_str(), "wb");
  if (f == nullptr) throw std::runtime_error("cannot write " + path.string());
  std::fwrite(text.data(), 1, text.size(), f);
  std::fclose(f);
}

// Result of running a command: exit code and captured stdout / stderr.
struct CommandResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// Runs `command` through the shell, capturing stdout and stderr separately.
CommandResult RunCommand(const std::string& command);

}  // namespace sparsetune::test
