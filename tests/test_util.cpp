#include "tests/test_util.h"

#include <fstream>
#include <sstream>
#include <sys/wait.h>

namespace sparsetune::test {

CommandResult RunCommand(const std::string& command) {
  TempDir dir;
  const auto out_path = dir / "out.txt";
  const auto err_path = dir / "err.txt";
  const std::string full = command + " >" + out_path.string() + " 2>" + err_path.string();
  const int status = std::system(full.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  auto slurp = [](const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  r.out = slurp(out_path);
  r.err = slurp(err_path);
  return r;
}

}  // namespace sparsetune::test
