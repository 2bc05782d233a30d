// lqer — the command-line program. Subcommands live in cmd_*.cpp and are
// listed in kCommands; this file owns parsing and every exit code.
#include <CLI/CLI.hpp>
#include <fmt/core.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <lqer/format/table.hpp>
#include <lqer/lqer.hpp>

#include "commands.hpp"

namespace {

using add_command_fn = lqer::cli::command (*)(CLI::App&);

// Every subcommand, in the order `lqer --help` lists them.
constexpr add_command_fn kCommands[] = {
    &lqer::cli::add_quantize_command,
    &lqer::cli::add_factorize_command,
    &lqer::cli::add_forward_command,
    &lqer::cli::add_inspect_command,
    &lqer::cli::add_stats_command,
};

std::string version_string() {
  return fmt::format("lqer {}", lqer::kVersionString);
}

// One line on stderr; `where` is "lqer" or "lqer quantize".
void report(const std::string& where, const std::string& message) {
  fmt::print(stderr, "{}: {}\n", where, message);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{
      "lqer — low-rank quantization error reconstruction for 4-bit LLM weights.\n"
      "Quantizes matrices read from .npy files in MX (mxint), scaled-integer and llama.cpp formats, factorizes\n"
      "layers into LQER checkpoints (.safetensors) and keeps calibration statistics as files.",
      "lqer"};
  app.set_version_flag("--version", version_string(), "Print the version and exit");
  app.require_subcommand(1, 1);
  app.footer("Run 'lqer <command> --help' for a command's options.");

  std::vector<lqer::cli::command> commands;
  for (const auto add : kCommands) commands.push_back(add(app));

  // The subcommand that was chosen, for the prefix of error messages.
  const auto where = [&] {
    for (const auto& c : commands)
      if (c.app->parsed()) return std::string("lqer ") + c.app->get_name();
    return std::string("lqer");
  };

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // CLI11 reports "lqer foo" as "A subcommand is required": name the word instead.
    if (argc > 1 && argv[1][0] != '-' && where() == "lqer") {
      report("lqer", fmt::format("unknown command '{}'; see 'lqer --help'", argv[1]));
      return 2;
    }
    // CLI11's messages are one sentence without a full stop; point at --help.
    report(where(), std::string(e.what()) + "; see '" + where() + " --help'");
    return 2;
  }

  for (const auto& c : commands) {
    if (!c.app->parsed()) continue;
    try {
      return c.run();
    } catch (const lqer::cli::usage_error& e) {
      report(where(), std::string(e.what()) + "; see '" + where() + " --help'");
      return 2;
    } catch (const lqer::format_error& e) {
      // A format name, block or option the format table does not have: an
      // option error like the above (lqer/format/table.hpp says what exists).
      report(where(), std::string(e.what()) + "; see '" + where() + " --help'");
      return 2;
    } catch (const lqer::error& e) {
      // lqer's messages name the file and what was wrong with it.
      report(where(), e.what());
      return 2;
    } catch (const std::exception& e) {
      report(where(), std::string("internal error: ") + e.what());
      return 1;
    }
  }
  return 2;  // unreachable: require_subcommand(1) makes parse() throw without one
}
