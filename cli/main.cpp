// Entry point of the `sparsetune` executable: registers the subcommands, parses the command line
// and is the one place (besides the evaluator boundary) where errors are caught: one line on
// stderr, exit 2 for bad input or usage, 1 for a failure while running.
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include "cli/commands.h"
#include "core/build_info.h"
#include "core/error.h"

namespace {

void PrintVersion() {
  const sparsetune::BuildInfo& b = sparsetune::GetBuildInfo();
  std::cout << "sparsetune " << b.version << "\n"
            << "commit:  " << b.git_commit << "\n"
            << "libtorch: " << b.torch << "\n"
            << "CUDA kernels compiled in: " << (b.cuda_compiled ? "yes" : "no") << "\n"
            << "CUPTI profiler compiled in: " << (b.cupti_compiled ? "yes" : "no") << "\n";
  const bool device = torch::cuda::is_available();
  std::cout << "CUDA device present: ";
  if (device) {
    std::cout << "yes (" << torch::cuda::device_count() << ")\n";
  } else {
    std::cout << "no\n";
  }
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "sparsetune: offline search for the sparse-attention and token-reduction schedule that keeps "
      "a video diffusion transformer's output (almost) identical to dense attention while running "
      "fastest.\n\nExit codes: 0 ok, 1 failure while running, 2 bad input or usage.",
      "sparsetune"};
  app.require_subcommand(0, 1);
  bool version = false;
  app.add_flag("--version", version,
               "Print version, git commit, libtorch version, whether CUDA and CUPTI are compiled "
               "in and whether a CUDA device is present");

  int exit_code = 0;
  sparsetune::cli::AddRunCommand(app, exit_code);
  sparsetune::cli::AddEvaluateCommand(app, exit_code);
  sparsetune::cli::AddExportCommand(app, exit_code);
  sparsetune::cli::AddValidateCommand(app, exit_code);
  sparsetune::cli::AddResultsCommand(app, exit_code);
  sparsetune::cli::AddAnalyzeCommand(app, exit_code);
  sparsetune::cli::AddBenchCommand(app, exit_code);
  sparsetune::cli::AddBenchEvaluateCommand(app, exit_code);
  sparsetune::cli::AddProfileCommand(app, exit_code);
  sparsetune::cli::AddTrainCommand(app, exit_code);
  sparsetune::cli::AddSampleCommand(app, exit_code);

  try {
    app.parse(argc, argv);
    if (version) {
      PrintVersion();
      return 0;
    }
    if (app.get_subcommands().empty()) {
      std::cout << app.help();
      return 0;
    }
    return exit_code;
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  } catch (const sparsetune::Error& e) {
    std::cerr << "sparsetune: " << e.what() << "\n";
    return e.exit_code();
  } catch (const c10::Error& e) {
    // libtorch errors carry a backtrace after the first line; users get the first line only.
    std::string message = e.what_without_backtrace();
    message = message.substr(0, message.find('\n'));
    std::cerr << "sparsetune: libtorch error: " << message << "\n";
    return 1;
  } catch (const std::bad_alloc&) {
    std::cerr << "sparsetune: out of memory\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "sparsetune: " << e.what() << "\n";
    return 1;
  }
}
