// libFuzzer target for the `lqer` command line: CLI11 parsing of the real
// subcommand definitions (tools/lqer/cmd_*.cpp's add_*_command, the same
// functions main.cpp registers) and the format table's (lqer/format/table.hpp)
// resolution of format names and block lengths to format types. Nothing is ever run: the command's
// `run` is never called, so no file is read or written (option validators may
// only look at the file system).
//
// Input: the argv after the program name, arguments separated by NUL or '\n'
// (at most 32 arguments). Property: parsing either succeeds or throws a
// CLI::ParseError (which includes --help / --version); format resolution of
// what parsed either yields a format whose block is the one resolved or throws
// lqer::format_error. Any other exception, a crash or a sanitizer report
// is a bug.
//
// Seeds: tests/fuzz/corpus/cli_options (hand-made command lines, one per file).
//   ./fuzz_cli_options -max_total_time=60 corpus_dir tests/fuzz/corpus/cli_options
#include <CLI/CLI.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include <lqer/format/table.hpp>

#include "../../tools/lqer/commands.hpp"

namespace {

[[noreturn]] void fail() { std::abort(); }

// The value an option was given, or `fallback` when it was not given.
std::string value_or(CLI::App* sub, const std::string& name, const std::string& fallback) {
  const CLI::Option* opt = sub->get_option_no_throw(name);
  if (opt == nullptr || opt->count() == 0 || opt->results().empty()) return fallback;
  return opt->results().back();
}

// What the subcommands do first with their format options: --block text to a
// number, resolve() (defaults and applicability), then with_format (name to type).
void check_format(CLI::App* sub, const std::string& format_opt, const std::string& block_opt,
                  const std::string& rule_opt, const std::string& default_format) {
  using namespace lqer;
  format_spec s;
  s.name = value_or(sub, format_opt, default_format);
  const std::string block = value_or(sub, block_opt, "");
  const std::string rule = value_or(sub, rule_opt, "ocp");
  const CLI::Option* r = sub->get_option_no_throw(rule_opt);
  try {
    if (!block.empty()) s.block = parse_block(block);
    s.rule = rule == "lqer" ? lqer::mx_rule::lqer : lqer::mx_rule::ocp;
    s = resolve(s, r != nullptr && r->count() > 0, false, false);
    with_format(s, [&]<class F>(std::type_identity<F>) {
      // The type with_format picked has the block that was asked for.
      if (s.block != lqer::kPerRow && F::kBlock != s.block) fail();
    });
  } catch (const format_error&) {
    // a sentence for the user: the expected outcome for an unsupported name or block
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string> args{"lqer"};
  std::string cur;
  for (std::size_t i = 0; i < size; ++i) {
    const char c = static_cast<char>(data[i]);
    if (c == '\0' || c == '\n') {
      args.push_back(cur);
      cur.clear();
      if (args.size() > 32) return 0;
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) args.push_back(cur);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  // The same app main.cpp builds (minus the version string's fmt call).
  CLI::App app{"lqer", "lqer"};
  app.set_version_flag("--version", "lqer fuzz", "Print the version and exit");
  app.require_subcommand(1, 1);
  const lqer::cli::command commands[] = {
      lqer::cli::add_quantize_command(app),
      lqer::cli::add_factorize_command(app),
      lqer::cli::add_forward_command(app),
      lqer::cli::add_inspect_command(app),
      lqer::cli::add_stats_command(app),
  };
  try {
    app.parse(static_cast<int>(argv.size() - 1), argv.data());
  } catch (const CLI::ParseError&) {
    return 0;  // a usage error (or --help / --version): main reports it and exits
  }
  // Parsed: exactly one subcommand was chosen (require_subcommand(1, 1)).
  int chosen = 0;
  for (const auto& c : commands) chosen += c.app->parsed() ? 1 : 0;
  if (chosen != 1) fail();
  if (commands[0].app->parsed()) check_format(commands[0].app, "--format", "--block", "--rule", "");
  if (commands[1].app->parsed()) {
    check_format(commands[1].app, "--w-format", "--w-block", "--w-rule", "mxint4");
    check_format(commands[1].app, "--lr-format", "--lr-block", "--lr-rule", "mxint8");
  }
  if (commands[2].app->parsed()) check_format(commands[2].app, "--act-format", "--act-block", "--act-rule", "mxint8");
  return 0;
}
