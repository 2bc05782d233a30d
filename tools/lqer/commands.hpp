// lqer CLI — how subcommands plug into main.cpp.
//
// Each subcommand lives in its own cmd_<name>.cpp and exposes one
// `add_<name>_command(CLI::App& parent)`: it declares the subcommand and its
// options on `parent` and returns a `command` whose `run` main calls when the
// user chose that subcommand. Parsing and running are kept apart so that main
// owns every exit code in one place:
//
//   0  success
//   2  a usage error (unknown option, bad value) or an lqer::error (bad file,
//      bad data): one sentence on stderr, nothing written
//   1  anything unexpected (a bug, out of memory)
//
// To add a subcommand: write cmd_<name>.cpp, declare its add_ function below,
// list it in main.cpp's kCommands and in CMakeLists.txt.
#pragma once

#include <functional>
#include <stdexcept>
#include <string>

namespace CLI {
class App;
}

namespace lqer::cli {

/// A bad combination of options that CLI11's own checks cannot see (e.g. a
/// block length the chosen format does not support). Exit code 2.
class usage_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A registered subcommand: its CLI11 app (to ask whether it was chosen) and
/// what to do when it was. `run` returns the process exit code.
struct command {
  CLI::App* app = nullptr;
  std::function<int()> run;
};

command add_quantize_command(CLI::App& parent);
command add_factorize_command(CLI::App& parent);
command add_forward_command(CLI::App& parent);
command add_inspect_command(CLI::App& parent);
command add_stats_command(CLI::App& parent);

}  // namespace lqer::cli
