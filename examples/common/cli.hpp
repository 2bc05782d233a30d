// engine — what the example programs' command lines (use_lite, llama) share:
// the quantization options and their checks, the method names (plain, lqer,
// l2qer, rms, whiten), integer lists, progress lines, interrupt handling for
// commands that write files, and the one error-to-exit-code policy.
// CLI11 is the parser; this only keeps the two programs saying the same thing
// the same way.
#pragma once

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <exception>
#include <functional>
#include <initializer_list>
#include <lqer/error.hpp>
#include <lqer/layer/reference_forward.hpp>  // correction_mode
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/quant_names.hpp"

namespace engine {

/// A bad combination of options CLI11 cannot see by itself (exit code 2, and
/// the message points at --help).
struct usage_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A long command stopped by SIGINT / SIGTERM (run_program: exit 130).
struct interrupted : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// While alive, SIGINT and SIGTERM only set a flag: a long command polls it
/// between steps (check()) and unwinds, so every file it writes is either
/// complete or absent — the writers write a temporary and rename it, and a
/// thrown exception removes the temporary. A second signal while the flag is
/// set restores the default action and re-raises: the user can always kill a
/// command that is not polling. Only a sig_atomic_t is touched in the handler.
class interrupt_guard {
 public:
  interrupt_guard() {
    flag() = 0;
    old_int_ = std::signal(SIGINT, &handler);
    old_term_ = std::signal(SIGTERM, &handler);
  }
  ~interrupt_guard() {
    std::signal(SIGINT, old_int_);
    std::signal(SIGTERM, old_term_);
  }
  interrupt_guard(const interrupt_guard&) = delete;
  interrupt_guard& operator=(const interrupt_guard&) = delete;
  /// Throws interrupted (naming `what` was being done) once a signal came.
  static void check(const std::string& what) {
    if (flag()) throw interrupted("interrupted while " + what + "; nothing was written");
  }

 private:
  static volatile std::sig_atomic_t& flag() {
    static volatile std::sig_atomic_t f = 0;
    return f;
  }
  static void handler(int sig) {
    if (flag()) {
      std::signal(sig, SIG_DFL);
      std::raise(sig);
      return;
    }
    flag() = 1;
  }
  using handler_t = void (*)(int);
  handler_t old_int_ = SIG_DFL, old_term_ = SIG_DFL;
};

/// "what done/total, 12 s left" on stderr when it is a terminal (redrawn in
/// place), nothing otherwise; the estimate is the mean time per item so far.
class progress_meter {
 public:
  explicit progress_meter(std::string what) : what_(std::move(what)), t0_(std::chrono::steady_clock::now()) {}
  void operator()(int done, int total) const {
    static const bool tty = ::isatty(STDERR_FILENO) != 0;
    if (!tty || total <= 0) return;
    const double spent = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    const double left = done > 0 ? spent / done * (total - done) : 0;
    std::fprintf(stderr, "\r\033[K%s %d/%d, %.0f s, %.0f s left", what_.c_str(), done, total, spent, left);
    if (done == total) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  std::string what_;
  std::chrono::steady_clock::time_point t0_;
};

/// The quantization options every program takes. `Config` is the engine's
/// quant_config (fields weight_format, lowrank_format, block, whiten_damping,
/// mode, reference_forward; describe() throws value_error for an unsupported
/// combination).
struct format_options {
  std::string weight_format = "mxint4", lowrank_format = "mxint8", rule = "lqer", mode = "fused";
  int block = 16;
  double damping = 1e-4;
  bool reference = false;
  /// The output projection's format, for engines whose config has one (llama).
  std::string output_format = "float";

  template <class Config>
  Config config() const {
    Config c;
    c.reference_forward = reference;
    c.weight_format = weight_format;
    c.lowrank_format = lowrank_format;
    c.rule = rule;
    c.block = block;
    c.whiten_damping = damping;
    if constexpr (requires { c.output_format; }) c.output_format = output_format;
    if (mode == "fused")
      c.mode = lqer::correction_mode::fused;
    else if (mode == "paper")
      c.mode = lqer::correction_mode::paper;
    else
      throw usage_error("--mode must be fused or paper, not '" + mode + "'");
    // Checked here, before anything is loaded: lqer's whiten refuses it too,
    // but only once the model is calibrated, after a table has begun.
    if (!std::isfinite(damping) || damping < 0)
      throw usage_error("--damping must be finite and >= 0, not " + std::to_string(damping));
    (void)c.describe();  // throws value_error naming the supported formats
    return c;
  }
};

/// `blocks`: the block lengths the engine builds, for the help text.
inline void add_format_options(CLI::App* cmd, format_options& f, const std::string& blocks) {
  cmd->add_option("--weight-format", f.weight_format,
                  "Weight format: mxint4 or mxint3 (MX integers), or q4_0 / q4_1 (llama.cpp's; with --lowrank-format "
                  "q8_0 --block 32, Q8_0 activations)")
      ->capture_default_str();
  cmd->add_option("--lowrank-format", f.lowrank_format, "A/B format: mxint8 or mxint4; q8_0 with q4_0 or q4_1 weights")
      ->capture_default_str();
  cmd->add_option("--rule", f.rule,
                  "MX exponent rule of every format: lqer (the LQER reference's ceil/half-even) or ocp (OCP MX "
                  "v1.0's floor/half-away; built for mxint4 weights with mxint8 A/B)")
      ->capture_default_str();
  cmd->add_option("--block", f.block, "Block length of weights, activations and A/B: " + blocks)->capture_default_str();
  cmd->add_option("--mode", f.mode,
                  "Correction semantics: fused (t·B accumulated with x·Wq, as the kernels do) or paper "
                  "(the LQER reference's simulation, which also rounds t·B and the bias)")
      ->capture_default_str();
  cmd->add_flag("--reference", f.reference,
                "Run lqer's scalar reference forward instead of the fused kernel (slow; bit-identical in fused mode)");
  cmd->add_option("--damping", f.damping, "whiten's damping, relative to the mean eigenvalue of E[x xᵀ]")
      ->capture_default_str();
}

/// The quantization methods by the names the paper and the issues use:
/// plain = rank 0 (no correction); lqer = identity scale; l2qer = mean_abs
/// (the paper's L²QER); rms; whiten.
inline const std::vector<std::string>& method_names() {
  static const std::vector<std::string> names{"plain", "lqer", "l2qer", "rms", "whiten"};
  return names;
}
inline const char* kMethodHelp =
    "Quantize every linear layer: plain (rank 0), lqer (identity scale), l2qer (mean_abs), rms, whiten";

struct method {
  bool plain = false;  ///< rank 0 whatever --rank says
  scale_policy_kind policy = scale_policy_kind::identity;
  /// Whether the method reads calibration statistics (all but plain and lqer).
  bool needs_calibration() const noexcept { return !plain && policy != scale_policy_kind::identity; }
};

/// value_error for a name outside method_names().
inline method parse_method(const std::string& name) {
  if (name == "plain") return {true, scale_policy_kind::identity};
  if (name == "lqer") return {false, scale_policy_kind::identity};
  if (name == "l2qer") return {false, scale_policy_kind::mean_abs};
  if (name == "rms" || name == "whiten") return {false, parse_scale_policy(name)};
  throw lqer::value_error("unknown method '" + name + "' (plain, lqer, l2qer, rms or whiten)");
}

/// "8,16,32" → {8, 16, 32}; usage_error naming `what` otherwise.
inline std::vector<int> parse_int_list(const std::string& s, const char* what) {
  std::vector<int> v;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, ',');) {
    try {
      std::size_t used = 0;
      v.push_back(std::stoi(item, &used));
      if (used != item.size()) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      throw usage_error(std::string(what) + " must be a comma-separated list of integers, not '" + s + "'");
    }
  }
  if (v.empty()) throw usage_error(std::string(what) + " is empty");
  return v;
}

/// Parses and runs a program whose subcommands are `commands` (one required):
/// `run` is called once parsing succeeded. Exit codes: 0 success; 2 a usage
/// error or an lqer::error (one sentence on stderr, prefixed with the
/// program and command); 1 anything unexpected.
inline int run_program(CLI::App& app, int argc, char** argv, std::initializer_list<CLI::App*> commands,
                       const std::function<int()>& run) {
  const std::string program = app.get_name();
  // The subcommand that was chosen, for the prefix of error messages.
  const auto where = [&] {
    for (const auto* c : commands)
      if (c->parsed()) return program + " " + c->get_name();
    return program;
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    // One line, as every other error: CLI11's app.exit(e) would add a second
    // ("Run with --help for more information."). Before any command, CLI11
    // says "A subcommand is required" whatever it met: name the word instead.
    if (argc > 1 && where() == program) {
      std::fprintf(stderr, "%s: unknown %s '%s'; see '%s --help'\n", program.c_str(),
                   argv[1][0] == '-' ? "option (options go after the command)" : "command", argv[1], program.c_str());
      return 2;
    }
    std::fprintf(stderr, "%s: %s; see '%s --help'\n", where().c_str(), e.what(), where().c_str());
    return 2;
  }
  const std::string sub = where();
  try {
    return run();
  } catch (const usage_error& e) {
    std::fprintf(stderr, "%s: %s; see '%s --help'\n", sub.c_str(), e.what(), sub.c_str());
    return 2;
  } catch (const interrupted& e) {
    std::fprintf(stderr, "%s: %s\n", sub.c_str(), e.what());
    return 130;
  } catch (const lqer::error& e) {
    std::fprintf(stderr, "%s: %s\n", sub.c_str(), e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: unexpected error: %s\n", sub.c_str(), e.what());
    return 1;
  }
}

}  // namespace engine
