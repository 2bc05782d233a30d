// llama — the command-line program (a first, minimal one):
//   llama perplexity --model F.gguf --text FILE [--ctx N] [--threads T]
// The float model (the file's tensors decoded to float, run in float32),
// perplexity as llama.cpp's llama-perplexity computes it: windows of N tokens,
// the second half of each scored (model::evaluate).
// Exit codes: 0 success; 2 a usage error or an lqer::error (one sentence on
// stderr); 1 anything unexpected.
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <fstream>
#include <iostream>
#include <lqer/error.hpp>
#include <lqer/io/gguf.hpp>
#include <memory>
#include <sstream>
#include <string>

#include "model.hpp"
#include "tokenizer.hpp"

namespace {

struct perplexity_options {
  std::string model, text;
  int ctx = 512;
  int threads = 1;
};

int run_perplexity(const perplexity_options& o) {
  std::ifstream in(o.text, std::ios::binary);
  if (!in) throw lqer::io_error(o.text + ": cannot be read");
  std::ostringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();

  engine::thread_pool pool(o.threads);
  const auto t0 = std::chrono::steady_clock::now();
  const auto file = lqer::io::gguf_file::open(o.model);
  const auto tok = llama::tokenizer::from_gguf(file);
  const llama::model m(std::make_shared<const llama::model_weights>(llama::model_weights::from_gguf(file, pool)));
  const auto ids = tok.encode(text, /*add_special=*/false, /*parse_special=*/false);
  const std::vector<std::int32_t> tokens(ids.begin(), ids.end());
  if (static_cast<llama::index_t>(tokens.size()) < o.ctx)
    throw lqer::value_error(o.text + ": " + std::to_string(tokens.size()) + " tokens, fewer than one window of " +
                            std::to_string(o.ctx));
  const auto t1 = std::chrono::steady_clock::now();
  const auto ll = m.evaluate(tokens, o.ctx, pool);
  const auto t2 = std::chrono::steady_clock::now();
  const double secs = std::chrono::duration<double>(t2 - t1).count();
  const auto windows = tokens.size() / static_cast<std::size_t>(o.ctx);
  std::printf("model %s (float: the file's tensors decoded to float32), %zu tokens, %zu windows of %d\n",
              o.model.c_str(), tokens.size(), windows, o.ctx);
  std::printf("perplexity %.4f over %zu scored tokens (load %.2f s, eval %.2f s, %.0f tokens/s, %d threads)\n",
              ll.perplexity(), ll.predicted, std::chrono::duration<double>(t1 - t0).count(), secs,
              double(windows * static_cast<std::size_t>(o.ctx)) / secs, o.threads);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"llama — a Llama-architecture decoder (SmolLM2) from its GGUF file, every linear through one interface",
               "llama"};
  app.require_subcommand(1, 1);
  perplexity_options p;
  auto* ppl = app.add_subcommand("perplexity", "Perplexity of the float model on a text file");
  ppl->add_option("--model", p.model, "The GGUF file")->required();
  ppl->add_option("--text", p.text, "The text (UTF-8)")->required();
  ppl->add_option("--ctx", p.ctx, "Tokens per window")->check(CLI::Range(2, 1 << 20))->capture_default_str();
  ppl->add_option("--threads", p.threads, "Threads")->check(CLI::Range(1, 256))->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  try {
    if (*ppl) return run_perplexity(p);
  } catch (const lqer::error& e) {
    std::fprintf(stderr, "llama: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "llama: unexpected: %s\n", e.what());
    return 1;
  }
  return 0;
}
