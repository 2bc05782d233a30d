// `lqer factorize`: W.npy and calibration activations → an LQER layer
// directory (see layer_dir.hpp for its contents) holding the layer twice: as
// dequantized .npy files for inspection, and compact as layer.safetensors, an
// lqer checkpoint of its codes and scales (io/checkpoint.hpp; --name names the
// layer inside it), which `lqer forward` and engines load as they are.
//
// Calibration: each --calib file is one batch for the statistics (the LQER
// reference's L²QER scale is a max over batches of per-batch means, so the
// batching matters); --batch-tokens N cuts every file into batches of N tokens
// instead. The files are read one at a time and not kept. --stats files
// (`lqer stats collect` / `merge`: statistics gathered elsewhere, by N jobs)
// are merged first, and --calib batches added to them.
//
// Output is all-or-nothing: every file is written into a fresh temporary
// directory next to DIR, and only when all of them were written is that moved
// into place — renamed to DIR when DIR does not exist (or is empty), otherwise
// its files are renamed into DIR one by one (replacing the previous run's
// files, and removing A.npy / B.npy / scale.npy / bias.npy that this run does
// not produce, so that a stale factor can never be paired with a new Wq).
// Any error before that leaves DIR untouched.

#include <CLI/CLI.hpp>
#include <fmt/core.h>
#include <nlohmann/json.hpp>

#include <unistd.h>

#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <lqer/calib/activation_stats.hpp>
#include <lqer/factorize/factorize.hpp>
#include <lqer/io/atomic_file.hpp>
#include <lqer/io/checkpoint.hpp>
#include <lqer/io/npy.hpp>
#include <lqer/tensor/check.hpp>

#include "commands.hpp"
#include "factorize_choice.hpp"
#include "layer_dir.hpp"

namespace lqer::cli {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

struct factorize_cli {
  std::string weight, out, bias;
  std::string name = "layer";
  std::vector<std::string> calib, stats;
  index_t rank = 32;
  index_t batch_tokens = 0;
  std::string policy = "mean_abs", solver = "randomized";
  mx_spec w{"mxint4", 0, mx_rule::lqer}, lr{"mxint8", 0, mx_rule::lqer};  // block 0: the format's default
  std::string w_rule = "lqer", lr_rule = "lqer";
  double damping = policy::whiten{}.damping;
  std::string whiten_factorization = "cholesky";
  index_t oversampling = randomized_svd{}.oversampling;
  int power_iterations = randomized_svd{}.power_iterations;
  bool quiet = false;
};

// ---------------------------------------------------------------------------
// The output directory

/// A temporary directory next to `target` (io/atomic_file.hpp: a short fixed
/// name, so that any legal DIR works, created exclusively), removed with its
/// content on destruction unless committed.
class staging_dir {
 public:
  explicit staging_dir(const fs::path& target) : target_(target), dir_(make(target)) {}
  staging_dir(const staging_dir&) = delete;
  staging_dir& operator=(const staging_dir&) = delete;
  const fs::path& path() const { return dir_.path(); }

  /// Moves the staged files into the target (see the file comment). `owned`
  /// are the names a layer directory may hold: those not staged are removed.
  void commit(std::span<const std::string_view> owned) {
    std::error_code ec;
    const bool exists = fs::exists(target_, ec);
    if (exists && !fs::is_directory(target_, ec)) throw io_error(target_.string() + ": exists and is not a directory");
    if (exists && fs::is_empty(target_, ec)) fs::remove(target_, ec);
    if (!fs::exists(target_, ec)) {
      fs::rename(path(), target_, ec);
      if (ec) throw io_error(target_.string() + ": cannot move the output into place: " + ec.message());
      dir_.release();
      return;
    }
    // Factors first, report.json last: a reader that sees the new report sees
    // the files it describes.
    for (const std::string_view name : owned) {
      if (name == "report.json") continue;
      const fs::path staged = path() / name, dest = target_ / name;
      if (fs::exists(staged, ec))
        fs::rename(staged, dest, ec);
      else
        fs::remove(dest, ec);
      if (ec) throw io_error(dest.string() + ": cannot replace: " + ec.message());
    }
    fs::rename(path() / "report.json", target_ / "report.json", ec);
    if (ec) throw io_error((target_ / "report.json").string() + ": cannot replace: " + ec.message());
  }

 private:
  static io::detail::temporary_guard make(const fs::path& target) {
    const fs::path parent = io::detail::temporary_directory_of(target);
    std::error_code ec;
    if (!fs::is_directory(parent, ec))
      throw io_error(target.string() + ": the parent directory " + parent.string() + " does not exist");
    return io::detail::create_temporary_directory(parent, target.string());
  }

  fs::path target_;
  io::detail::temporary_guard dir_;  // removes the staging directory unless it was renamed into place
};

constexpr std::string_view kOwnedFiles[] = {
    "Wq.npy", "A.npy", "B.npy", "scale.npy", "bias.npy", "layer.safetensors", "report.json"};

// ---------------------------------------------------------------------------

double since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void write_matrix(const fs::path& p, const std::vector<float>& data, index_t rows, index_t cols) {
  const std::array<index_t, 2> shape{rows, cols};
  io::write_npy(p, data.data(), std::span<const index_t>(shape));
}

int run_factorize(factorize_cli o) {
  using clock = std::chrono::steady_clock;
  const auto t_start = clock::now();
  o.w.rule = parse_rule(o.w_rule);
  o.lr.rule = parse_rule(o.lr_rule);
  // Every option is checked before any file is read. Default blocks: 16 (the
  // paper's), 32 for llama.cpp's formats (their only one); A/B: the weight's.
  if (o.w.block == 0) o.w.block = is_ggml_name(o.w.format) ? kGgmlBlock : 16;
  if (o.lr.block == 0) o.lr.block = o.w.block;
  if (o.w.block != o.lr.block)
    throw usage_error("--w-block and --lr-block must be equal (" + std::to_string(o.w.block) + " vs " +
                      std::to_string(o.lr.block) +
                      "): products are computed block by block, and the activations share the block too");
  if (o.rank < 0) throw usage_error("--rank must be >= 0");
  if (o.batch_tokens < 0) throw usage_error("--batch-tokens must be >= 0");
  if (o.name.empty()) throw usage_error("--name must not be empty (it names the layer in layer.safetensors)");
  // Bounds that keep a typo from running for hours: each power iteration is two
  // passes over the error matrix (q = 3 is the default; beyond ~10 the sketch has
  // converged for any spectrum), and p beyond a few hundred columns is an exact SVD.
  if (o.power_iterations < 0 || o.power_iterations > 64)
    throw usage_error("--power-iterations must be in [0, 64], got " + std::to_string(o.power_iterations));
  if (o.oversampling < 0 || o.oversampling > 4096)
    throw usage_error("--oversampling must be in [0, 4096], got " + std::to_string(o.oversampling));
  if (!(o.damping >= 0.0) || !std::isfinite(o.damping)) throw usage_error("--damping must be a finite number >= 0");
  with_block(o.w.block, [&]<int Block>(std::integral_constant<int, Block>) {
    with_layer_formats<Block>(o.w, o.lr, [](auto, auto) {});
  });
  const bool tty = ::isatty(::fileno(stderr)) != 0 && !o.quiet;

  // W [out, in].
  auto t0 = clock::now();
  const io::npy_matrix w = io::read_npy_matrix(o.weight, io::npy_convert::any_to_float32);
  if (w.rows == 0 || w.cols == 0)
    throw shape_error(o.weight + ": the weight has shape (" + std::to_string(w.rows) + ", " + std::to_string(w.cols) +
                      "); expected a non-empty [out, in] matrix");
  require_finite(w.data, w.cols, o.weight);
  if (o.rank > std::min(w.rows, w.cols))
    throw value_error("--rank " + std::to_string(o.rank) +
                      " exceeds min(out, in) = " + std::to_string(std::min(w.rows, w.cols)) + " of " + o.weight + " [" +
                      std::to_string(w.rows) + ", " + std::to_string(w.cols) + "]");
  std::vector<float> bias;
  if (!o.bias.empty()) {
    bias = io::read_npy_vector(o.bias, io::npy_convert::any_to_float32);
    if (static_cast<index_t>(bias.size()) != w.rows)
      throw shape_error(o.bias + ": the bias has " + std::to_string(bias.size()) + " elements but " + o.weight +
                        " has " + std::to_string(w.rows) + " outputs");
    require_finite(bias, o.bias);
  }

  // Calibration statistics: --stats files merged, then --calib batches, file by file.
  const bool whiten = o.policy == "whiten";
  activation_stats stats(w.cols, whiten ? gram_mode::on : gram_mode::off);
  if (!o.stats.empty()) {
    stats = activation_stats();
    for (const std::string& file : o.stats) {
      const activation_stats s = activation_stats::load(file);
      if (s.in_features() != w.cols)
        throw shape_error(file + ": a statistics file of width " + std::to_string(s.in_features()) + " but " +
                          o.weight + " [out, in] has " + std::to_string(w.cols) + " inputs");
      if (stats.in_features() != 0 && s.has_gram() != stats.has_gram())
        throw value_error(file + ": " + (s.has_gram() ? "keeps" : "does not keep") + " the Gram matrix and " +
                          o.stats.front() + " " + (s.has_gram() ? "does not" : "does") +
                          "; statistics files merge only with the same --gram mode");
      stats.merge(s);
    }
    if (whiten && !stats.has_gram())
      throw value_error(o.stats.front() +
                        ": has no Gram matrix, which --policy whiten needs (collect it with lqer "
                        "stats collect --gram)");
  }
  for (std::size_t f = 0; f < o.calib.size(); ++f) {
    const std::string& file = o.calib[f];
    if (tty) fmt::print(stderr, "\rreading calibration {}/{}: {}\x1b[K", f + 1, o.calib.size(), file);
    const io::npy_matrix x = io::read_npy_matrix(file, io::npy_convert::any_to_float32);
    if (x.cols != w.cols)
      throw shape_error(file + ": the activations have " + std::to_string(x.cols) + " columns but " + o.weight +
                        " [out, in] has " + std::to_string(w.cols) + " inputs");
    if (x.rows == 0) throw shape_error(file + ": no tokens (0 rows)");
    require_finite(x.data, x.cols, file);
    const index_t step = o.batch_tokens > 0 ? o.batch_tokens : x.rows;
    for (index_t r = 0; r < x.rows; r += step)
      stats.add_batch(matrix_view<const float>(x.data.data() + r * x.cols, std::min(step, x.rows - r), x.cols));
  }
  if (tty && !o.calib.empty()) fmt::print(stderr, "\n");
  if (stats.empty() && o.policy != "identity")
    throw usage_error("--policy " + o.policy + " needs calibration activations: give --calib X.npy (or --stats S)");
  const double read_s = since(t0);

  // Factorize, in the chosen formats.
  const auto progress = [tty](int step, int steps, std::string_view name) {
    if (tty) fmt::print(stderr, "\rfactorize [{}/{}] {}\x1b[K", step, steps, name);
  };
  any_solver solver;
  solver.exact = o.solver == "exact";
  solver.randomized.oversampling = o.oversampling;
  solver.randomized.power_iterations = o.power_iterations;

  const matrix_view<const float> wv(w.data.data(), w.rows, w.cols);
  staging_dir stage(o.out);
  json report;
  t0 = clock::now();
  with_block(o.w.block, [&]<int Block>(std::integral_constant<int, Block>) {
    with_layer_formats<Block>(o.w, o.lr, [&]<class WF, class LF>(std::type_identity<WF>, std::type_identity<LF>) {
      const auto run = [&](const auto& opt) {
        using opt_t = std::decay_t<decltype(opt)>;
        auto r = factorize<decltype(opt_t::policy), decltype(opt_t::solver), WF, LF>(wv, stats, o.rank, opt);
        if (tty) fmt::print(stderr, "\n");
        r.report.policy = o.policy;
        r.report.solver = o.solver;
        const auto t_write = clock::now();
        write_matrix(stage.path() / "Wq.npy", r.layer.wq.dequantize(), w.rows, w.cols);
        if (o.rank > 0) {
          write_matrix(stage.path() / "A.npy", r.layer.a.dequantize(), w.cols, o.rank);
          write_matrix(stage.path() / "B.npy", r.layer.b.dequantize(), o.rank, w.rows);
        }
        if (!r.scale.empty()) io::write_npy_vector(stage.path() / "scale.npy", r.scale);
        if (!bias.empty()) io::write_npy_vector(stage.path() / "bias.npy", bias);
        save(r.layer, stage.path() / "layer.safetensors", o.name, io::layer_info{o.policy, o.solver});
        const factorize_report& rep = r.report;
        // Member by member rather than `pp = {{...}}`: clang 14 leaks the
        // temporary of an initializer-list assignment to an existing json
        // (LeakSanitizer reports it in the asan stage).
        json pp = json::object();
        if (whiten) {
          pp["damping"] = o.damping;
          pp["lambda"] = rep.whiten_lambda;
          pp["factorization"] = o.whiten_factorization;
        } else if (o.policy != "identity") {
          pp["clamp_min"] = policy::mean_abs{}.clamp_min;
        }
        json sp = json::object();
        if (!solver.exact) {
          sp["oversampling"] = o.oversampling;
          sp["power_iterations"] = o.power_iterations;
          sp["seed"] = solver.randomized.seed;
        }
        report = {
          {"lqer_version", fmt::format("{}.{}.{}", LQER_VERSION_MAJOR, LQER_VERSION_MINOR, LQER_VERSION_PATCH)},
          {"weight", o.weight},
          {"bias", o.bias.empty() ? json(nullptr) : json(o.bias)},
          {"calibration",
           {{"files", o.calib},
            {"stats_files", o.stats},
            {"tokens", stats.tokens()},
            {"batches", stats.batches()},
            {"gram", stats.has_gram()}}},
          {"checkpoint", {{"file", "layer.safetensors"}, {"name", o.name}}},
          {"in_features", rep.in_features},
          {"out_features", rep.out_features},
          {"rank", rep.rank},
          {"policy", rep.policy},
          {"policy_parameters", pp},
          {"solver", rep.solver},
          {"solver_parameters", sp},
          {"formats", {{"weight", to_json(o.w, rep.weight_format)}, {"lowrank", to_json(o.lr, rep.lowrank_format)}}},
          {"storage_bytes", r.layer.storage_bytes()},
          {"error_norm", rep.error_norm},
          {"residual_norm", rep.residual_norm},
          {"residual_norm_quantized", rep.residual_norm_quantized},
          {"activation",
           {{"basis", rep.activation_basis},
            {"error", rep.activation_error},
            {"residual", rep.activation_residual},
            {"residual_quantized", rep.activation_residual_quantized}}},
          {"singular_values", rep.singular_values},
#if defined(_OPENMP)
          {"threads", omp_get_max_threads()},
#else
              {"threads", 1},
#endif
          {"seconds",
           {{"read", read_s},
            {"stats", rep.seconds.stats},
            {"quantize", rep.seconds.quantize},
            {"svd", rep.seconds.svd},
            {"lowrank_quantize", rep.seconds.lowrank_quantize},
            {"report", rep.seconds.report},
            {"factorize", rep.seconds.total},
            {"write", since(t_write)}}},
        };
      };
      with_policy(o.policy, solver, o.damping,
                  o.whiten_factorization == "eigen" ? whiten_factorization::eigen : whiten_factorization::cholesky,
                  bias, progress, run);
    });
  });
  report["seconds"]["total"] = since(t_start);
  {
    const std::string text = report.dump(2) + "\n";
    std::ofstream f(stage.path() / "report.json", std::ios::binary);
    f << text;
    f.flush();
    if (!f) throw io_error((stage.path() / "report.json").string() + ": write failed");
  }
  stage.commit(kOwnedFiles);

  if (!o.quiet)
    fmt::print(
        "{} [{}x{}] rank {} ({}, {}): ||Eq|| {:.4e}, ||Eq - AB|| {:.4e} ({:.4e} with quantized A, B), "
        "activation-weighted {:.4e} -> {:.4e} ({}), {:.3f} s -> {}\n",
        o.weight, w.rows, w.cols, o.rank, o.policy, o.solver, report["error_norm"].get<double>(),
        report["residual_norm"].get<double>(), report["residual_norm_quantized"].get<double>(),
        report["activation"]["error"].get<double>(), report["activation"]["residual_quantized"].get<double>(),
        report["activation"]["basis"].get<std::string>(), report["seconds"]["total"].get<double>(), o.out);
  return 0;
}

}  // namespace

command add_factorize_command(CLI::App& parent) {
  auto o = std::make_shared<factorize_cli>();
  CLI::App* sub = parent.add_subcommand(
      "factorize",
      "Quantize a weight and factor its quantization error (LQER / L²QER): W.npy + calibration activations -> a "
      "layer directory with layer.safetensors (the compact checkpoint), Wq.npy, A.npy, B.npy, scale.npy and "
      "report.json.");
  sub->add_option("--weight", o->weight, "W.npy: the weight [out, in] (nn.Linear layout), float32")->required();
  sub->add_option("--calib", o->calib,
                  "X.npy: calibration activations [tokens, in]; repeat for more files. Each file is one batch for "
                  "the mean_abs statistic (see --batch-tokens). Not needed for --policy identity");
  sub->add_option("--stats", o->stats,
                  "S.safetensors: calibration statistics from lqer stats collect / merge (repeat to merge several), "
                  "instead of or besides --calib");
  sub->add_option("--name", o->name, "The layer's name inside DIR/layer.safetensors")->default_str("layer");
  sub->add_option("--rank", o->rank, "Rank k of the correction A B; 0 = plain quantization")->default_str("32");
  sub->add_option("--policy", o->policy, "Scale policy: identity (LQER), mean_abs (L²QER), rms, whiten")
      ->check(CLI::IsMember({"identity", "mean_abs", "rms", "whiten"}))
      ->default_str("mean_abs");
  sub->add_option("--solver", o->solver, "SVD solver: exact (BDCSVD, slow on large layers) or randomized")
      ->check(CLI::IsMember({"exact", "randomized"}))
      ->default_str("randomized");
  sub->add_option("--w-format", o->w.format,
                  "Weight format: " + list_text(detail::weight_bits{}, "mxint", ", ") +
                      "; or llama.cpp's q4_0 or q4_1 (with --lr-format q8_0, block 32)")
      ->default_str("mxint4");
  sub->add_option("--w-block", o->w.block, "Weight block length along `in`: 16 or 32")
      ->default_str("16; 32 for q4_0 and q4_1");
  sub->add_option("--w-rule", o->w_rule,
                  "Weight MX rule: lqer (the LQER reference) or ocp (OCP MX v1.0); llama.cpp's formats have none")
      ->check(CLI::IsMember({"ocp", "lqer"}))
      ->default_str("lqer");
  sub->add_option("--lr-format", o->lr.format,
                  "Format of A and B: " + list_text(detail::lowrank_bits{}, "mxint", ", ") +
                      " (LQER keeps the factors in 8 bits); q8_0 with llama.cpp's weights")
      ->default_str("mxint8");
  sub->add_option("--lr-block", o->lr.block, "Block length of A (along `in`) and B (along k); must equal --w-block")
      ->default_str("--w-block's");
  sub->add_option("--lr-rule", o->lr_rule, "MX rule of A and B: lqer or ocp")
      ->check(CLI::IsMember({"ocp", "lqer"}))
      ->default_str("lqer");
  sub->add_option("--out", o->out, "DIR: the layer directory to write (created; files of a previous run replaced)")
      ->required();
  sub->add_option("--bias", o->bias, "BIAS.npy: an optional bias [out], copied to DIR/bias.npy");
  sub->add_option("--batch-tokens", o->batch_tokens,
                  "Cut each calibration file into batches of this many tokens (0: one batch per file)")
      ->default_str("0");
  sub->add_option("--damping", o->damping, "whiten: damping δ, λ = δ · mean(diag R)")->default_str("1e-4");
  sub->add_option("--whiten-factorization", o->whiten_factorization, "whiten: cholesky or eigen")
      ->check(CLI::IsMember({"cholesky", "eigen"}))
      ->default_str("cholesky");
  sub->add_option("--oversampling", o->oversampling, "randomized: extra sketch columns p")->default_str("10");
  sub->add_option("--power-iterations", o->power_iterations, "randomized: power iterations q")->default_str("3");
  sub->add_flag("-q,--quiet", o->quiet, "Print nothing (no summary, no progress)");
  sub->footer(
      "Writes into DIR: layer.safetensors (codes, block scales and bias: an lqer checkpoint, docs/checkpoint.md),\n"
      "Wq.npy [out, in], A.npy [in, k], B.npy [k, out] (dequantized float32; no A/B when k = 0),\n"
      "scale.npy [in] (diagonal policies), bias.npy (with --bias) and report.json. Nothing in DIR changes\n"
      "unless everything succeeded. Progress is shown on a terminal. Threads: OMP_NUM_THREADS.\n"
      "Exit status: 0 success, 2 bad option, bad file or bad data (a sentence on stderr).\n"
      "Example: lqer factorize --weight W.npy --calib X.npy --rank 32 --out layer0");
  return command{sub, [o] { return run_factorize(*o); }};
}

}  // namespace lqer::cli
