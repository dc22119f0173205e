// Subcommands of the `sparsetune` executable, one file each (cli/<name>.cpp). Each Add* function
// registers its subcommand on `app` with its options and --help text; when the subcommand is
// chosen, its callback runs the command and stores the exit code in `exit_code`. Commands are
// thin: parse into a struct, call one library function, print. Errors are thrown as
// sparsetune::Error and turned into one line on stderr by main().
#pragma once

#include <CLI/CLI.hpp>

namespace sparsetune::cli {

void AddValidateCommand(CLI::App& app, int& exit_code);
void AddResultsCommand(CLI::App& app, int& exit_code);
void AddExportCommand(CLI::App& app, int& exit_code);
void AddBenchCommand(CLI::App& app, int& exit_code);
// Adds `bench evaluate` under the `bench` subcommand; call after AddBenchCommand.
void AddBenchEvaluateCommand(CLI::App& app, int& exit_code);
void AddRunCommand(CLI::App& app, int& exit_code);
void AddEvaluateCommand(CLI::App& app, int& exit_code);
void AddAnalyzeCommand(CLI::App& app, int& exit_code);
void AddProfileCommand(CLI::App& app, int& exit_code);
void AddTrainCommand(CLI::App& app, int& exit_code);
void AddSampleCommand(CLI::App& app, int& exit_code);

}  // namespace sparsetune::cli
