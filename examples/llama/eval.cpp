// llama — the quality and speed tables (see eval.hpp).
#include "eval.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <lqer/io/atomic_file.hpp>
#include <lqer/io/gguf.hpp>
#include <lqer/kernel/dispatch.hpp>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <sstream>

#include "common/relative_error.hpp"
#include "tokenizer.hpp"

namespace llama {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw lqer::io_error(path + ": cannot be read");
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw lqer::io_error(path + ": read failed");
  return ss.str();
}

void progress_line(const std::string& what, int done, int total) {
  static const bool tty = ::isatty(STDERR_FILENO) != 0;
  if (!tty) return;
  std::fprintf(stderr, "\r\033[K%s %d/%d", what.c_str(), done, total);
  if (done == total) std::fputc('\n', stderr);
  std::fflush(stderr);
}

namespace {

using clock_type = std::chrono::steady_clock;
double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::vector<std::int32_t> tokenize_file(const tokenizer& tok, const std::string& path) {
  const auto ids = tok.encode(read_text(path), /*add_special=*/false, /*parse_special=*/false);
  return {ids.begin(), ids.end()};
}

/// The first `want` windows of `ctx` tokens (fewer when the text is shorter;
/// value_error when it holds not even one).
std::span<const std::int32_t> first_windows(const std::vector<std::int32_t>& ids, index_t ctx, int want,
                                            const std::string& path) {
  const auto have = static_cast<index_t>(ids.size()) / ctx;
  if (have < 1)
    throw lqer::value_error(path + ": " + std::to_string(ids.size()) + " tokens, fewer than one window of " +
                            std::to_string(ctx));
  const index_t n = std::min<index_t>(have, want);
  return std::span<const std::int32_t>(ids).first(static_cast<std::size_t>(n * ctx));
}

/// model::evaluate one window at a time, for the progress line (the windows
/// are independent, so the sum is evaluate's over all of them).
log_likelihood evaluate_windows(const model& m, std::span<const std::int32_t> tokens, index_t ctx, thread_pool& pool,
                                const std::string& label) {
  log_likelihood sum;
  const int n = static_cast<int>(static_cast<index_t>(tokens.size()) / ctx);
  for (int w = 0; w < n; ++w) {
    const auto r = m.evaluate(
        tokens.subspan(static_cast<std::size_t>(w) * static_cast<std::size_t>(ctx), static_cast<std::size_t>(ctx)), ctx,
        pool);
    sum.nll_sum += r.nll_sum;
    sum.predicted += r.predicted;
    progress_line(label + ": perplexity window", w + 1, n);
  }
  return sum;
}

/// The float model's input to each linear layer: one buffer per input slot
/// (q, k, v share one; gate and up share one), the first `rows` tokens.
struct layer_inputs {
  std::vector<std::vector<float>> x;  ///< [n_layers · kInputsPerBlock][rows · in]
  index_t rows = 0;
  static std::size_t slot(int linear) {
    return static_cast<std::size_t>(linear / kLinearsPerBlock * kInputsPerBlock +
                                    input_slot(static_cast<linear_kind>(linear % kLinearsPerBlock)));
  }
};

layer_inputs capture_inputs(const model& fp32, std::span<const std::int32_t> tokens, thread_pool& pool) {
  layer_inputs li;
  li.rows = static_cast<index_t>(tokens.size());
  li.x.resize(static_cast<std::size_t>(fp32.cfg().n_layers * kInputsPerBlock));
  const linear_observer keep = [&](int i, lqer::matrix_view<const float> x) {
    auto& dst = li.x[layer_inputs::slot(i)];
    if (!dst.empty()) return;  // k, v after q; up after gate: the same x
    for (index_t r = 0; r < x.rows; ++r) dst.insert(dst.end(), x.row(r), x.row(r) + x.cols);
  };
  kv_cache cache(fp32.cfg(), li.rows);
  (void)fp32.forward(tokens, cache, pool, /*last_only=*/true, &keep);  // one chunk: rows ≤ kDefaultBatch
  return li;
}

std::vector<float> apply(const linear_op& op, const layer_inputs& li, int i, thread_pool& pool) {
  std::vector<float> y(static_cast<std::size_t>(li.rows * op.out_features()));
  op.forward(lqer::matrix_view<const float>(li.x[layer_inputs::slot(i)].data(), li.rows, op.in_features()),
             lqer::matrix_view<float>(y.data(), li.rows, op.out_features()), pool);
  return y;
}

struct result_row {
  std::string method;  ///< "float", "plain", or a method name
  int block = 0, rank = 0;
  std::string describe;
  double bits = 32, perplexity = 0, nll = 0, quantize_s = 0, eval_tokens_per_s = 0;
  std::size_t scored = 0;
  std::vector<double> layer_error;  ///< per linear (empty for float)
};

const char* kKindNames[kLinearsPerBlock] = {"q", "k", "v", "o", "gate", "up", "down"};

std::string method_label(const std::string& m) {
  if (m == "lqer") return "LQER";
  if (m == "l2qer") return "L²QER";
  return m;
}

/// llama.cpp's results (llama-quantize + llama-perplexity on the same file and text, as JSON), read and checked
/// before the table's minutes of work: an object with a "files" array of
/// objects. Null when none was given.
nlohmann::json read_peers(const std::string& path) {
  if (path.empty()) return nullptr;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text(path));
  } catch (const nlohmann::json::exception& e) {
    throw lqer::parse_error(path + ": not JSON (" + e.what() + ")");
  }
  if (!j.is_object() || !j.contains("files") || !j["files"].is_array())
    throw lqer::parse_error(path + ": not llama.cpp peer results (an object with a \"files\" array expected)");
  for (const auto& f : j["files"])
    if (!f.is_object()) throw lqer::parse_error(path + ": an entry of \"files\" is not an object");
  return j;
}

/// llama.cpp's rows, printed as they are (a missing number as —).
void print_peers(const nlohmann::json& j, std::ostream& out, nlohmann::json& all) {
  if (j.is_null()) {
    out << "\nllama.cpp: no peer results (none given: --peers takes llama-perplexity's numbers on the same file "
           "and text as JSON)\n";
    return;
  }
  all["llama_cpp"] = j;
  const auto str = [&](const nlohmann::json& o, const char* k, const std::string& d) {
    return o.contains(k) && o[k].is_string() ? o[k].get<std::string>() : d;
  };
  const auto integer = [&](const char* k) { return j.contains(k) && j[k].is_number_integer() ? j[k].get<long>() : 0L; };
  out << "\nllama.cpp " << str(j, "commit", "?").substr(0, 12)
      << " on the same file and text (its own llama-quantize and llama-perplexity, ctx " << integer("ctx") << ", "
      << integer("chunks") << " chunks):\n\n| format | bits/weight (linears) | bits/weight (file) | "
      << "perplexity |\n|---|---|---|---|\n";
  for (const auto& f : j["files"]) {
    const auto num = [&](const char* k, const char* f2) {
      return f.contains(k) && f[k].is_number() ? fmt(f2, f[k].get<double>()) : std::string("—");
    };
    out << "| " << str(f, "name", "?") << " | " << num("bits_per_weight_linears", "%.3f") << " | "
        << num("bits_per_weight_file", "%.3f") << " | " << num("perplexity", "%.4f") << " |\n";
  }
}

}  // namespace

void run_quality_table(const eval_options& opt, std::ostream& out) {
  if (opt.layer_rows < 1 || opt.layer_rows > model::kDefaultBatch || opt.layer_rows > opt.ctx)
    throw engine::usage_error("--layer-rows must be in [1, min(ctx, " + std::to_string(model::kDefaultBatch) + ")]");
  const int n_configs_per_block = static_cast<int>(1 + opt.ranks.size() * opt.methods.size());
  for (const auto& m : opt.methods) (void)engine::parse_method(m);
  for (const int b : opt.blocks) {
    quant_config c = opt.base;
    c.block = b;
    (void)c.describe();  // value_error naming the supported block lengths, before anything is loaded
  }
  if (!opt.json_out.empty()) {
    // Refused before the minutes of work, with the writer's own words.
    const std::filesystem::path target(opt.json_out);
    std::error_code ec;
    if (std::filesystem::is_directory(target, ec))
      throw lqer::io_error(opt.json_out + ": cannot write: it is a directory");
    const auto dir = target.parent_path().empty() ? std::filesystem::path(".") : target.parent_path();
    if (!std::filesystem::is_directory(dir, ec))
      throw lqer::io_error(opt.json_out + ": cannot write: " + dir.string() + " is not an existing directory");
  }

  const nlohmann::json peers = read_peers(opt.peers_file);

  thread_pool pool(opt.threads);
  auto t0 = clock_type::now();
  const auto file = lqer::io::gguf_file::open(opt.model_file);
  const auto tok = tokenizer::from_gguf(file);
  const auto w = std::make_shared<const model_weights>(model_weights::from_gguf(file, pool));
  const double load_s = seconds_since(t0);
  const model fp32(w);
  for (const int r : opt.ranks)
    for (const auto& d : w->linears)
      if (r < 0 || r > std::min(d.in, d.out))
        throw lqer::value_error("--ranks: " + std::to_string(r) + " is outside [0, " +
                                std::to_string(std::min(d.in, d.out)) + "] for a " + std::to_string(d.out) + " × " +
                                std::to_string(d.in) + " layer");

  const auto eval_all = tokenize_file(tok, opt.eval_file);
  const auto calib_all = tokenize_file(tok, opt.calib_file);
  const auto eval_ids = first_windows(eval_all, opt.ctx, opt.chunks, opt.eval_file);
  const auto calib_ids = first_windows(calib_all, opt.ctx, opt.calib_chunks, opt.calib_file);

  const bool need_gram = std::find(opt.methods.begin(), opt.methods.end(), "whiten") != opt.methods.end();
  t0 = clock_type::now();
  const calibration calib =
      calibrate(fp32, calib_ids, opt.ctx, pool, need_gram ? lqer::gram_mode::on : lqer::gram_mode::off);
  const double calib_s = seconds_since(t0);
  const layer_inputs li = capture_inputs(fp32, eval_ids.first(static_cast<std::size_t>(opt.layer_rows)), pool);
  std::vector<std::vector<float>> y_fp32(static_cast<std::size_t>(fp32.num_linears()));
  for (int i = 0; i < fp32.num_linears(); ++i) y_fp32[static_cast<std::size_t>(i)] = apply(fp32.linear(i), li, i, pool);

  std::vector<result_row> rows;
  {
    result_row r;
    r.method = "float";
    r.describe = "float32 (the file's Q4_1 tensors decoded)";
    t0 = clock_type::now();
    const auto ll = evaluate_windows(fp32, eval_ids, opt.ctx, pool, "float");
    r.eval_tokens_per_s = double(eval_ids.size()) / seconds_since(t0);
    r.nll = ll.nll_sum;
    r.scored = ll.predicted;
    r.perplexity = ll.perplexity();
    rows.push_back(r);
    std::fprintf(stderr, "llama eval: float: perplexity %.4f\n", r.perplexity);
  }
  const int total = static_cast<int>(opt.blocks.size()) * n_configs_per_block;
  auto run = [&](const quant_config& cfg, const std::string& method, int block, int rank) {
    result_row r;
    r.method = method;
    r.block = block;
    r.rank = rank;
    r.describe = cfg.describe();
    const std::string label = "[" + std::to_string(rows.size()) + "/" + std::to_string(total) + "] " +
                              (method == "plain" ? "plain" : method_label(method) + " rank " + std::to_string(rank)) +
                              " block " + std::to_string(block);
    t0 = clock_type::now();
    auto q = quantize_linears(
        *w, calib, cfg, [&](int d, int n) { progress_line(label + ": quantize", d, n); }, &pool);
    r.quantize_s = seconds_since(t0);
    r.bits = q.bits_per_weight();
    model mq(w);
    install(mq, q);
    for (int i = 0; i < mq.num_linears(); ++i)
      r.layer_error.push_back(
          engine::relative_error(apply(mq.linear(i), li, i, pool), y_fp32[static_cast<std::size_t>(i)]));
    t0 = clock_type::now();
    const auto ll = evaluate_windows(mq, eval_ids, opt.ctx, pool, label);
    r.eval_tokens_per_s = double(eval_ids.size()) / seconds_since(t0);
    r.nll = ll.nll_sum;
    r.scored = ll.predicted;
    r.perplexity = ll.perplexity();
    std::fprintf(stderr, "llama eval: %s: perplexity %.4f, %.3f bits/weight\n", label.c_str(), r.perplexity, r.bits);
    rows.push_back(std::move(r));
  };
  for (const int b : opt.blocks) {
    quant_config c = opt.base;
    c.block = b;
    c.policy = scale_policy_kind::identity;
    c.set_rank(0, fp32.num_linears());
    run(c, "plain", b, 0);
    for (const int rank : opt.ranks)
      for (const auto& m : opt.methods) {
        c.policy = engine::parse_method(m).policy;
        c.set_rank(rank, fp32.num_linears());
        run(c, m, b, rank);
      }
  }

  // --- what was run ---
  const auto& cfgm = w->cfg;
  out << "# SmolLM2-135M-Instruct through lqer: held-out perplexity (the LQER paper's table)\n\n"
      << "model " << opt.model_file << " (" << fp32.num_linears() << " linear layers, " << cfgm.n_layers
      << " blocks; loaded and decoded in " << fmt("%.2f", load_s) << " s)\n"
      << "float = the file's Q4_1 tensors decoded to float32 and run in float32: the reference every row is "
         "compared with, not the original bf16 model\n"
      << "evaluation:  " << eval_ids.size() << " tokens of " << opt.eval_file << " in " << eval_ids.size() / opt.ctx
      << " windows of " << opt.ctx << ", the second half of each scored (" << rows.front().scored
      << " tokens), as llama.cpp's llama-perplexity does\n"
      << "calibration: " << calib.tokens << " tokens of " << opt.calib_file << " (another book: held out), "
      << (need_gram ? "with Gram matrices, " : "") << "in " << fmt("%.1f", calib_s) << " s\n";
  {
    quant_config c = opt.base;
    c.set_rank(0, fp32.num_linears());
    out << "formats: " << c.describe() << " (block, method and rank vary below; the activations are quantized "
        << "to MXINT8 in the weight's block length: W4A8)\n";
  }
  out << "quantized linears: lqer::linear, kernel path " << lqer::to_string(lqer::best_path()) << "; " << opt.threads
      << " threads\n"
      << "bits/weight: Wq, A and B (codes and block scales) over the " << fp32.num_linears()
      << " linears; the embedding/output table and the norms stay float\n\n";

  // --- the table ---
  const double float_ppl = rows.front().perplexity;
  out << "| block | method | rank | bits/weight | perplexity | vs float | quantize s | eval tokens/s |\n"
      << "|---|---|---|---|---|---|---|---|\n";
  for (const auto& r : rows) {
    const bool f = r.method == "float";
    out << "| " << (f ? std::string("—") : std::to_string(r.block)) << " | "
        << (f                     ? std::string("float")
            : r.method == "plain" ? std::string("plain W4A8")
                                  : method_label(r.method))
        << " | " << (f || r.method == "plain" ? std::string("—") : std::to_string(r.rank)) << " | "
        << (f ? std::string("32") : fmt("%.3f", r.bits)) << " | " << fmt("%.4f", r.perplexity) << " | "
        << (f ? std::string("—") : fmt("%+.2f%%", 100.0 * (r.perplexity / float_ppl - 1.0))) << " | "
        << (f ? std::string("—") : fmt("%.1f", r.quantize_s)) << " | " << fmt("%.0f", r.eval_tokens_per_s) << " |\n";
  }

  // --- the paper's ordering, checked ---
  const auto find = [&](const std::string& m, int b, int rank) -> const result_row* {
    for (const auto& r : rows)
      if (r.method == m && r.block == b && (m == "plain" || r.rank == rank)) return &r;
    return nullptr;
  };
  const bool have_both = std::find(opt.methods.begin(), opt.methods.end(), "lqer") != opt.methods.end() &&
                         std::find(opt.methods.begin(), opt.methods.end(), "l2qer") != opt.methods.end();
  if (have_both) {
    out << "\nThe paper's ordering plain > LQER > L²QER (perplexity):\n";
    for (const int b : opt.blocks)
      for (const int rank : opt.ranks) {
        const auto *p = find("plain", b, 0), *l = find("lqer", b, rank), *l2 = find("l2qer", b, rank);
        const bool holds = p->perplexity > l->perplexity && l->perplexity > l2->perplexity;
        out << "  block " << b << " rank " << rank << ": " << fmt("%.4f", p->perplexity) << " > "
            << fmt("%.4f", l->perplexity) << " > " << fmt("%.4f", l2->perplexity) << " — "
            << (holds ? "holds" : "does NOT hold") << "\n";
      }
  }

  // --- per layer ---
  out << "\nPer-layer relative output error ‖Yq − Y‖/‖Y‖ (each layer on the float model's inputs, first " << li.rows
      << " tokens of the evaluation text), mean over the " << cfgm.n_layers
      << " blocks per kind, and the worst layer:\n\n| block | method | rank |";
  for (const char* k : kKindNames) out << ' ' << k << " |";
  out << " worst |\n|---|---|---|";
  for (int k = 0; k < kLinearsPerBlock; ++k) out << "---|";
  out << "---|\n";
  for (const auto& r : rows) {
    if (r.layer_error.empty()) continue;
    out << "| " << r.block << " | " << (r.method == "plain" ? std::string("plain") : method_label(r.method)) << " | "
        << (r.method == "plain" ? std::string("—") : std::to_string(r.rank)) << " |";
    for (int k = 0; k < kLinearsPerBlock; ++k) {
      double s = 0;
      for (index_t b = 0; b < cfgm.n_layers; ++b)
        s += r.layer_error[static_cast<std::size_t>(linear_index(b, static_cast<linear_kind>(k)))];
      out << ' ' << fmt("%.4f", s / double(cfgm.n_layers)) << " |";
    }
    const auto worst = std::max_element(r.layer_error.begin(), r.layer_error.end()) - r.layer_error.begin();
    out << ' ' << fmt("%.4f", r.layer_error[static_cast<std::size_t>(worst)]) << " "
        << linear_name(static_cast<int>(worst)) << " |\n";
  }

  nlohmann::json all;
  print_peers(peers, out, all);
  out.flush();

  if (!opt.json_out.empty()) {
    all["model"] = opt.model_file;
    all["eval_file"] = opt.eval_file;
    all["calib_file"] = opt.calib_file;
    all["ctx"] = opt.ctx;
    all["eval_tokens"] = eval_ids.size();
    all["calib_tokens"] = calib.tokens;
    all["kernel_path"] = lqer::to_string(lqer::best_path());
    all["threads"] = opt.threads;
    auto& jr = all["rows"] = nlohmann::json::array();
    for (const auto& r : rows) {
      nlohmann::json e{{"method", r.method},
                       {"block", r.block},
                       {"rank", r.rank},
                       {"describe", r.describe},
                       {"bits_per_weight", r.bits},
                       {"perplexity", r.perplexity},
                       {"nll_sum", r.nll},
                       {"scored", r.scored},
                       {"quantize_s", r.quantize_s},
                       {"eval_tokens_per_s", r.eval_tokens_per_s}};
      if (!r.layer_error.empty()) {
        nlohmann::json le = nlohmann::json::object();
        for (std::size_t i = 0; i < r.layer_error.size(); ++i) le[linear_name(static_cast<int>(i))] = r.layer_error[i];
        e["layer_error"] = le;
      }
      jr.push_back(e);
    }
    const std::string text = all.dump(1) + "\n";
    lqer::io::detail::write_file_atomically(opt.json_out,
                                            {std::as_bytes(std::span<const char>(text.data(), text.size()))});
    std::fprintf(stderr, "llama eval: every number in %s\n", opt.json_out.c_str());
  }
}

// ---------------------------------------------------------------------------
// Speed

namespace {

/// Best-of-`runs` prefill (one forward of `prompt` from an empty cache) and
/// decode (after a prefill of `decode_prompt` tokens, `n` single-token
/// forwards feeding back the argmax) rates in tokens/s.
std::pair<double, double> time_model(const model& m, std::span<const std::int32_t> prompt,
                                     std::span<const std::int32_t> decode_prompt, index_t n, int runs,
                                     thread_pool& pool) {
  double prefill = 1e300, decode = 1e300;
  for (int r = 0; r < runs; ++r) {
    {
      kv_cache cache(m.cfg(), static_cast<index_t>(prompt.size()));
      const auto t0 = clock_type::now();
      (void)m.forward(prompt, cache, pool, /*last_only=*/true);
      prefill = std::min(prefill, seconds_since(t0));
    }
    kv_cache cache(m.cfg(), static_cast<index_t>(decode_prompt.size()) + n);
    std::vector<float> l = m.forward(decode_prompt, cache, pool, true);
    const auto t0 = clock_type::now();
    for (index_t i = 0; i < n; ++i) {
      const auto next = static_cast<std::int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
      l = m.forward(std::span<const std::int32_t>(&next, 1), cache, pool, true);
    }
    decode = std::min(decode, seconds_since(t0));
  }
  return {double(prompt.size()) / prefill, double(n) / decode};
}

/// Runs argv[0] with `argv`, stdout captured, stderr discarded; io_error when
/// it cannot start or exits non-zero.
std::string run_capture(const std::vector<std::string>& argv) {
  std::string cmd;
  for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  int fds[2];
  if (::pipe(fds) != 0) throw lqer::io_error("cannot create a pipe for: " + cmd);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw lqer::io_error("cannot fork for: " + cmd);
  }
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    if (std::FILE* null = std::freopen("/dev/null", "w", stderr); null == nullptr) ::_exit(126);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  std::string output;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
    if (n < 0) {
      if (errno == EINTR) continue;
      break;
    }
    output.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    throw lqer::io_error(
        cmd + ": failed (" +
        (WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status)) : "killed by a signal") +
        "); run it by hand to see why");
  return output;
}

/// Bits per weight of a GGUF file's 210 block linears (blk.*.attn_q/k/v/
/// output, ffn_gate/up/down), as stored: what our rows' column counts.
double gguf_linear_bits(const std::string& path) {
  const auto f = lqer::io::gguf_file::open(path);
  double bits = 0, weights = 0;
  for (const auto& t : f.tensors()) {
    const std::string_view n = t.name;
    if (n.substr(0, 4) != "blk.") continue;
    for (const char* kind : {".attn_q.weight", ".attn_k.weight", ".attn_v.weight", ".attn_output.weight",
                             ".ffn_gate.weight", ".ffn_up.weight", ".ffn_down.weight"}) {
      const std::string_view k(kind);
      if (n.size() > k.size() && n.substr(n.size() - k.size()) == k) {
        bits += 8.0 * double(t.n_bytes);
        weights += double(t.n_elements);
      }
    }
  }
  return weights > 0 ? bits / weights : 0.0;
}

}  // namespace

void run_speed_table(const speed_options& opt, std::ostream& out) {
  if (opt.thread_counts.empty()) throw engine::usage_error("--threads-list is empty");
  // llama-bench and its models are checked before anything else is loaded.
  std::vector<std::string> peers = opt.peer_models;
  if (!opt.llama_bench.empty()) {
    if (::access(opt.llama_bench.c_str(), X_OK) != 0 || std::filesystem::is_directory(opt.llama_bench))
      throw lqer::io_error(opt.llama_bench + ": not an executable file (--llama-bench wants llama.cpp's llama-bench)");
    if (peers.empty()) peers.push_back(opt.model_file);
    for (const auto& p : peers) (void)lqer::io::gguf_file::open(p);  // a typed error naming a bad file
  } else if (!peers.empty()) {
    throw engine::usage_error("--peer-models needs --llama-bench");
  }

  const int max_threads = *std::max_element(opt.thread_counts.begin(), opt.thread_counts.end());
  thread_pool load_pool(max_threads);
  const auto file = lqer::io::gguf_file::open(opt.model_file);
  const auto tok = tokenizer::from_gguf(file);
  const auto w = std::make_shared<const model_weights>(model_weights::from_gguf(file, load_pool));
  const auto ids = tokenize_file(tok, opt.text_file);
  const index_t need = std::max(opt.prompt_tokens, opt.decode_prompt);
  if (static_cast<index_t>(ids.size()) < need)
    throw lqer::value_error(opt.text_file + ": " + std::to_string(ids.size()) + " tokens, fewer than the " +
                            std::to_string(need) + " the prompts need");
  const std::span<const std::int32_t> all(ids);
  const auto prompt = all.first(static_cast<std::size_t>(opt.prompt_tokens));
  const auto dprompt = all.first(static_cast<std::size_t>(opt.decode_prompt));

  struct row {
    std::string name;
    double bits = 32;
    std::vector<std::pair<double, double>> rates;
    bool peer = false;
  };
  std::vector<row> rows;
  const calibration none;  // speed does not depend on the policy: identity needs no statistics
  auto time_all = [&](const model& m, row r) {
    for (const int t : opt.thread_counts) {
      thread_pool pool(t);
      r.rates.push_back(time_model(m, prompt, dprompt, opt.decode_tokens, opt.runs, pool));
      std::fprintf(stderr, "llama bench: %s, %d threads: prefill %.1f, decode %.1f tokens/s\n", r.name.c_str(), t,
                   r.rates.back().first, r.rates.back().second);
    }
    rows.push_back(std::move(r));
  };
  time_all(model(w), row{"float", 32, {}});
  for (const int rank : opt.ranks) {
    quant_config c = opt.base;
    c.set_rank(rank, static_cast<int>(w->linears.size()));
    auto q = quantize_linears(*w, none, c);
    model mq(w);
    const double bits = q.bits_per_weight();
    install(mq, q);
    time_all(mq, row{rank == 0 ? std::string("plain W4A8") : "W4A8 + rank " + std::to_string(rank), bits, {}});
  }

  // llama.cpp on the same lengths, threads and runs: pp<prompt> is its
  // prefill; tg<n> its decode, which starts from an empty cache (ours after a
  // decode_prompt-token prompt: attention over ≤ 256 positions is a few % of
  // the work either way). The best sample is taken, as for our rows.
  for (const auto& p : peers) {
    row r{"llama.cpp " + std::filesystem::path(p).filename().string(), gguf_linear_bits(p), {}, true};
    for (const int t : opt.thread_counts) {
      const std::string json = run_capture({opt.llama_bench, "-m", p, "-p", std::to_string(opt.prompt_tokens), "-n",
                                            std::to_string(opt.decode_tokens), "-t", std::to_string(t), "-r",
                                            std::to_string(opt.runs), "-o", "json"});
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(json);
      } catch (const nlohmann::json::exception&) {
        throw lqer::parse_error(opt.llama_bench + ": its -o json output is not JSON");
      }
      double prefill = 0, decode = 0;
      for (const auto& e : j) {
        double best = 0;
        for (const auto& v : e.at("samples_ts")) best = std::max(best, v.get<double>());
        if (e.at("n_gen").get<int>() == 0) prefill = best;
        if (e.at("n_prompt").get<int>() == 0) decode = best;
      }
      r.rates.emplace_back(prefill, decode);
      std::fprintf(stderr, "llama bench: %s, %d threads: prefill %.1f, decode %.1f tokens/s\n", r.name.c_str(), t,
                   prefill, decode);
    }
    rows.push_back(std::move(r));
  }

  quant_config c = opt.base;
  c.set_rank(0, static_cast<int>(w->linears.size()));
  out << "# SmolLM2-135M-Instruct through lqer: speed\n\nmodel " << opt.model_file << "; formats " << c.describe()
      << " (the rank varies); kernel path " << lqer::to_string(lqer::best_path()) << "\n"
      << "prefill: one forward of a " << opt.prompt_tokens << "-token prompt; decode: " << opt.decode_tokens
      << " greedy tokens one at a time after a " << opt.decode_prompt << "-token prompt; best of " << opt.runs
      << " runs; the output projection (" << w->cfg.vocab << " × " << w->cfg.d_model << ", "
      << (c.output_format == "float" ? std::string("float") : c.output_format + " W8A8")
      << " in the quantized rows, float in the float row) is included\n\n| model | bits/weight |";
  for (const int t : opt.thread_counts) out << " prefill " << t << "T | decode " << t << "T |";
  out << "\n|---|---|";
  for (std::size_t k = 0; k < opt.thread_counts.size(); ++k) out << "---|---|";
  out << '\n';
  for (const auto& r : rows) {
    out << "| " << r.name << " | " << (r.name == "float" ? std::string("32") : fmt("%.3f", r.bits)) << " |";
    for (const auto& [p, d] : r.rates) out << ' ' << fmt("%.1f", p) << " | " << fmt("%.1f", d) << " |";
    out << '\n';
  }
  // Each lqer row against each llama.cpp row: the ratios of tokens/s.
  for (const auto& peer : rows) {
    if (!peer.peer) continue;
    out << "\nlqer / " << peer.name << " (tokens/s ratio; above 1: lqer is faster)\n\n| model |";
    for (const int t : opt.thread_counts) out << " prefill " << t << "T | decode " << t << "T |";
    out << "\n|---|";
    for (std::size_t k = 0; k < opt.thread_counts.size(); ++k) out << "---|---|";
    out << '\n';
    for (const auto& r : rows) {
      if (r.peer) continue;
      out << "| " << r.name << " |";
      for (std::size_t k = 0; k < r.rates.size(); ++k)
        out << ' ' << fmt("%.2f", r.rates[k].first / peer.rates[k].first) << " | "
            << fmt("%.2f", r.rates[k].second / peer.rates[k].second) << " |";
      out << '\n';
    }
  }
  out.flush();
}

}  // namespace llama
