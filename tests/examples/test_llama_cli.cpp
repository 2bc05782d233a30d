// The `llama` program (examples/llama/main.cpp) run as a process, as a user
// runs it: what each subcommand prints against an independent reference where
// there is one, and its bad-input matrix.
//
//   tokenize    the ids of Hugging Face's tokenizer (the fixture made by
//               data/make_llama_tokenizer_fixture.py with transformers), one
//               line of ids per line of the --text file
//   perplexity  the float model: the number the engine's own evaluate() gives
//               on the same windows (its logits are checked against
//               transformers in test_llama_model); --quant plain / lqer: all
//               210 linears through lqer, perplexity above the float model's
//   generate    --chat: SmolLM2-Instruct answers "Paris" (transformers' greedy
//               continuation agrees, test_llama_model)
//   eval, bench the smallest tables; eval's --json parsed back and plotted
//               by scripts/plot_llama_eval.py (the demo's picture)
//
// Bad input (as test_use_lite_bad_input): exit status 2, nothing on stdout,
// one line on stderr naming the option or file, the cell directory unchanged
// (no --json written, no temporary left). Option cells are refused before the
// model is read and run without it; the others skip with a MESSAGE when
// scripts/fetch_smollm2.sh has not put the model in the cache.
//
// POSIX only (support/process.hpp runs the program through /bin/sh).
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "lqer/io/gguf.hpp"
#include "model.hpp"
#include "support/files.hpp"
#include "support/models.hpp"
#include "support/process.hpp"
#include "tokenizer.hpp"

namespace fs = std::filesystem;

namespace {

using lqer::test::check_refused;
using lqer::test::contains;
using lqer::test::one_line;
using lqer::test::run_lqer;  // runs LQER_CLI_PATH, here the llama program
using lqer::test::run_result;
using lqer::test::slurp;
using lqer::test::write_bytes;

const nlohmann::json& tokenizer_fixture() {
  static const nlohmann::json j = [] {
    std::ifstream in(fs::path(LQER_LLAMA_FIXTURE_DIR) / "llama_tokenizer_fixture.json");
    REQUIRE(in);
    return nlohmann::json::parse(in);
  }();
  return j;
}

/// The fixture's KJV verses, one per line: a text of about 5400 tokens.
std::string kjv_text() {
  std::string text;
  for (const auto& c : tokenizer_fixture()["cases"])
    if (c["name"].get<std::string>().rfind("kjv", 0) == 0) text += c["text"].get<std::string>() + "\n";
  return text;
}

bool have_model() {
  if (fs::exists(lqer_test::smollm2_gguf())) return true;
  MESSAGE("skipped: no SmolLM2 GGUF at " << lqer_test::smollm2_gguf().string() << " (run scripts/fetch_smollm2.sh)");
  return false;
}

/// A scratch directory for one test case, removed at the end.
struct scratch {
  fs::path dir;
  explicit scratch(const std::string& name)
      : dir(fs::path(LQER_LLAMA_TEST_DIR) / (name + "." + std::to_string(::getpid()))) {
    fs::remove_all(dir);
    fs::create_directories(dir);
  }
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  ~scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

run_result run_ok(const fs::path& io, const std::vector<std::string>& args) {
  run_result r = run_lqer(io, args);
  INFO("stderr: " << r.err);
  REQUIRE(r.exit_code == 0);
  return r;
}

/// The number after "perplexity " in perplexity's report.
double reported_perplexity(const std::string& out) {
  const auto at = out.find("\nperplexity ");
  REQUIRE(at != std::string::npos);
  return std::stod(out.substr(at + 12));
}

std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> v;
  std::stringstream in(s);
  for (std::string l; std::getline(in, l);) v.push_back(l);
  return v;
}

}  // namespace

TEST_CASE("llama program: tokenize --text prints Hugging Face's ids, one line per line of the file") {
  if (!have_model()) return;
  scratch s("tokenize");
  // Every fixture case that is valid UTF-8 on one line (none was encoded with
  // BOS). With --special the program encodes as Hugging Face's tokenizer does
  // by default (special tokens such as <|im_start|> parsed: "ids"); without,
  // they are text ("ids_split_special" where the fixture has it, llama-tokenize's
  // default).
  std::string text;
  std::vector<std::string> parsed, split, names;
  const auto join = [](const nlohmann::json& ids) {
    std::string out;
    for (const auto& id : ids) out += (out.empty() ? "" : " ") + std::to_string(id.get<int>());
    return out;
  };
  for (const auto& c : tokenizer_fixture()["cases"]) {
    if (!c.contains("text")) continue;  // invalid UTF-8, given as hex: not a line of a text file
    const auto t = c["text"].get<std::string>();
    if (t.find('\n') != std::string::npos) continue;
    REQUIRE_FALSE(c["bos"].get<bool>());
    text += t + "\n";
    parsed.push_back(join(c["ids"]));
    split.push_back(join(c.contains("ids_split_special") ? c["ids_split_special"] : c["ids"]));
    names.push_back(c["name"].get<std::string>());
  }
  REQUIRE(parsed.size() > 60);
  write_bytes(s.dir / "text.txt", text);
  for (const bool special : {true, false}) {
    CAPTURE(special);
    std::vector<std::string> args = {"tokenize", "--text", (s.dir / "text.txt").string()};
    if (special) args.push_back("--special");
    const auto got = lines_of(run_ok(s.dir, args).out);
    const auto& expected = special ? parsed : split;
    REQUIRE(got.size() == expected.size());
    for (std::size_t i = 0; i < got.size(); ++i) {
      CAPTURE(names[i]);
      CHECK(got[i] == expected[i]);
    }
  }
  // --prompt --special parses the chat markers into their control tokens (1 and 2).
  const auto chat = run_ok(s.dir, {"tokenize", "--prompt", "<|im_start|>user<|im_end|>", "--special"});
  CHECK(chat.out.rfind("1 ", 0) == 0);
  CHECK(contains(chat.out, " 2\n"));
}

TEST_CASE("llama program: perplexity is the engine's own evaluation of the same windows") {
  if (!have_model()) return;
  scratch s("perplexity");
  write_bytes(s.dir / "kjv.txt", kjv_text());
  const int ctx = 64, chunks = 3;
  const auto r = run_ok(s.dir, {"perplexity", "--text", (s.dir / "kjv.txt").string(), "--ctx", std::to_string(ctx),
                                "--chunks", std::to_string(chunks), "--threads", "2"});
  CAPTURE(r.out);
  CHECK(contains(r.out, std::to_string(chunks * ctx) + " tokens, " + std::to_string(chunks) + " windows of 64"));

  // The same windows in process: the first chunks·ctx tokens, each window
  // scored on its second half (llama-perplexity's rule, model::evaluate).
  const auto file = lqer::io::gguf_file::open(lqer_test::smollm2_gguf());
  const auto tok = llama::tokenizer::from_gguf(file);
  engine::thread_pool pool(2);
  const auto w = std::make_shared<const llama::model_weights>(llama::model_weights::from_gguf(file, pool));
  const llama::model m(w);
  const auto ids = tok.encode(kjv_text(), false, false);
  REQUIRE(ids.size() >= static_cast<std::size_t>(chunks * ctx));
  const std::vector<std::int32_t> tokens(ids.begin(), ids.end());
  llama::log_likelihood ll;
  for (int c = 0; c < chunks; ++c) {
    const auto one = m.evaluate(
        std::span<const std::int32_t>(tokens).subspan(static_cast<std::size_t>(c * ctx), static_cast<std::size_t>(ctx)),
        ctx, pool);
    ll.nll_sum += one.nll_sum;
    ll.predicted += one.predicted;
  }
  CHECK(ll.predicted == static_cast<std::size_t>(chunks * (ctx / 2 - 1)));  // positions ctx/2 … ctx-2 predict the next
  char expected[64];
  std::snprintf(expected, sizeof expected, "perplexity %.4f over %zu scored tokens", ll.perplexity(), ll.predicted);
  CHECK(contains(r.out, expected));
}

TEST_CASE("llama program: perplexity --quant runs every linear through lqer — quantized is above float") {
  if (!have_model()) return;
  scratch s("perplexity_quant");
  write_bytes(s.dir / "kjv.txt", kjv_text());
  const std::vector<std::string> base = {
      "perplexity", "--text", (s.dir / "kjv.txt").string(), "--ctx", "64", "--chunks", "2", "--threads", "2"};
  const double fp = reported_perplexity(run_ok(s.dir, base).out);
  auto plain_args = base;
  plain_args.insert(plain_args.end(), {"--quant", "plain", "--block", "32"});
  const auto plain = run_ok(s.dir, plain_args);
  CAPTURE(plain.err);
  CHECK(contains(plain.err, "210 linears quantized"));
  CHECK(contains(plain.err, "rank 0"));
  CHECK(contains(plain.err, "4.250 bits/weight"));  // 4-bit codes + an 8-bit scale per 32
  CHECK(contains(plain.out, "(plain)"));
  const double q = reported_perplexity(plain.out);
  CHECK(std::isfinite(q));
  CHECK(q > fp);  // 4-bit weights and 8-bit activations cost a 135M model perplexity
  auto l2_args = base;
  l2_args.insert(l2_args.end(), {"--quant", "l2qer", "--rank", "4", "--block", "32", "--calib",
                                 (s.dir / "kjv.txt").string(), "--calib-chunks", "1"});
  const auto l2 = run_ok(s.dir, l2_args);
  CAPTURE(l2.err);
  CHECK(contains(l2.err, "calibrated on 64 tokens"));
  CHECK(contains(l2.err, "rank 4, mean_abs"));
  CHECK(std::isfinite(reported_perplexity(l2.out)));
  // The OCP rule and the output projection W8A8 on top of plain: said in the
  // description, the 210 linears' bits unchanged (the output table is not
  // counted there; OCP's MXINT4 has the same 4.25 bits).
  plain_args.insert(plain_args.end(), {"--rule", "ocp", "--output-format", "mxint8"});
  const auto head = run_ok(s.dir, plain_args);
  CAPTURE(head.err);
  CHECK(contains(head.err, "W mxint4_b32_ocp, x mxint8_b32_ocp, A/B mxint8_b32_ocp"));
  CHECK(contains(head.err, "output mxint8_b32_ocp W8A8"));
  CHECK(contains(head.err, "4.250 bits/weight"));
  const double qh = reported_perplexity(head.out);
  CHECK(std::isfinite(qh));
  CHECK(qh != q);  // the head really changed
}

TEST_CASE("llama program: quantize writes a model file that perplexity and generate run as the GGUF + --quant") {
  if (!have_model()) return;
  scratch s("quantize");
  write_bytes(s.dir / "kjv.txt", kjv_text());
  const std::string file = (s.dir / "m.lqer.safetensors").string();
  const std::vector<std::string> quant = {"--quant", "l2qer", "--rank", "4", "--block", "32", "--calib",
                                          (s.dir / "kjv.txt").string(), "--calib-chunks", "1", "--ctx", "64"};
  std::vector<std::string> q = {"quantize", "--out", file, "--threads", "2"};
  q.insert(q.end(), quant.begin(), quant.end());
  const auto w = run_ok(s.dir, q);
  CAPTURE(w.err);
  CHECK(contains(w.out, "wrote " + file));
  CHECK(contains(w.out, "l2qer: W mxint4_b32_lqer"));
  CHECK(fs::exists(file));
  const std::vector<std::string> ppl = {"perplexity", "--text", (s.dir / "kjv.txt").string(), "--ctx", "64",
                                        "--chunks", "2"};
  auto from_file = ppl;
  from_file.insert(from_file.end(), {"--model", file});
  auto in_memory = ppl;
  in_memory.insert(in_memory.end(), quant.begin(), quant.end() - 2);  // the same options but --ctx (perplexity's own)
  const auto a = run_ok(s.dir, from_file), b = run_ok(s.dir, in_memory);
  CHECK(reported_perplexity(a.out) == reported_perplexity(b.out));
  CHECK(contains(a.out, "l2qer: W mxint4_b32_lqer"));
  auto no_verify = from_file;
  no_verify.push_back("--no-verify");
  CHECK(reported_perplexity(run_ok(s.dir, no_verify).out) == reported_perplexity(a.out));
  const auto g = run_ok(s.dir, {"generate", "--model", file, "--prompt", "In the beginning", "-n", "4"});
  CHECK(contains(g.err, "first token at"));
  const auto t = run_ok(s.dir, {"tokenize", "--model", file, "--prompt", "In the beginning"});
  CHECK(t.out == run_ok(s.dir, {"tokenize", "--prompt", "In the beginning"}).out);
}

TEST_CASE("llama program: quantize stopped by SIGINT or SIGTERM exits 130 and leaves the directory as it was") {
  if (!have_model()) return;
  scratch s("interrupt");
  write_bytes(s.dir / "kjv.txt", kjv_text());
  // A file already at --out: an interrupted run must leave it as it was.
  const std::string file = (s.dir / "m.lqer.safetensors").string();
  write_bytes(file, "an older model file");
  const auto before = lqer::test::snapshot(s.dir);
  // The signal comes once calibration is done, while the 210 layers are
  // factorized (seconds at rank 8 on one thread); the engine polls the flag
  // after every layer.
  for (const int sig : {SIGINT, SIGTERM}) {
    CAPTURE(sig);
    const auto r = lqer::test::run_and_signal_at(
        {"quantize", "--model", lqer_test::smollm2_gguf().string(), "--quant", "l2qer", "--rank", "8", "--calib",
         (s.dir / "kjv.txt").string(), "--calib-chunks", "1", "--ctx", "64", "--threads", "1", "--out", file},
        "llama: calibrated on", sig);
    CAPTURE(r.err);
    CHECK(r.exit_code == 130);
    CHECK(contains(r.err, "interrupted while quantizing; nothing was written"));
    const std::string diff = lqer::test::differences(before, lqer::test::snapshot(s.dir));
    CHECK_MESSAGE(diff.empty(), diff);
  }
}

TEST_CASE("llama program: generate --chat answers the capital of France") {
  if (!have_model()) return;
  scratch s("generate");
  const auto r = run_ok(s.dir, {"generate", "--chat", "--prompt", "What is the capital of France?", "-n", "16"});
  CAPTURE(r.out);
  CHECK(contains(r.out, "Paris"));
  CHECK(contains(r.err, "prefill"));
  CHECK(contains(r.err, "tokens/s"));
}

TEST_CASE("llama program: the smallest eval and bench tables — eval's --json holds every row") {
  if (!have_model()) return;
  scratch s("tables");
  write_bytes(s.dir / "kjv.txt", kjv_text());
  const std::string text = (s.dir / "kjv.txt").string(), json = (s.dir / "eval.json").string();
  const auto e = run_ok(s.dir, {"eval", "--text",       text, "--calib", text, "--ranks",  "4", "--methods",
                                "lqer", "--blocks",     "32", "--ctx",   "32", "--chunks", "1", "--calib-chunks",
                                "1",    "--layer-rows", "16", "--json",  json});
  CAPTURE(e.out);
  CHECK(contains(e.out, "| block | method | rank | bits/weight | perplexity |"));
  CHECK(contains(e.out, "| 32 | plain W4A8 |"));
  CHECK(contains(e.out, "| 32 | LQER | 4 |"));
  const auto j = nlohmann::json::parse(slurp(json));
  REQUIRE(j["rows"].size() == 3);  // float, plain, LQER rank 4
  CHECK(j["rows"][0]["method"] == "float");
  CHECK(j["rows"][1]["method"] == "plain");
  CHECK(j["rows"][2]["rank"] == 4);
  CHECK(j["rows"][2]["layer_error"].size() == 210);
  for (const auto& row : j["rows"]) CHECK(std::isfinite(row["perplexity"].get<double>()));
  // The per-row perplexities are the table's.
  char ppl[32];
  std::snprintf(ppl, sizeof ppl, "%.4f", j["rows"][1]["perplexity"].get<double>());
  CHECK(contains(e.out, ppl));
  // The demo's picture of it (scripts/plot_llama_eval.py): one line for LQER
  // at block 32, plain as a square, float as the dashed reference.
  const fs::path svg = s.dir / "eval.svg";
  const std::string plot = "python3 " + lqer::test::shell_quoted(LQER_PLOT_SCRIPT) + " " +
                           lqer::test::shell_quoted(json) + " " + lqer::test::shell_quoted(svg.string()) +
                           " >/dev/null";
  REQUIRE(std::system(plot.c_str()) == 0);
  const std::string picture = slurp(svg);
  CHECK(contains(picture, "<polyline"));
  CHECK(contains(picture, "LQER, block 32"));
  CHECK(contains(picture, "plain b32"));
  CHECK(contains(picture, "float "));

  const auto b = run_ok(s.dir, {"bench", "--text", text, "--ranks", "0", "--threads-list", "1", "--prompt-tokens", "16",
                                "--decode-tokens", "2", "--runs", "1"});
  CAPTURE(b.out);
  CHECK(contains(b.out, "| model | bits/weight | prefill 1T | decode 1T |"));
  CHECK(contains(b.out, "| plain W4A8 | 4.500 |"));
}

// ---------------------------------------------------------------------------
// The bad-input matrix

namespace {

struct cell_spec {
  std::string name;
  std::vector<std::string> args;     // "{d}" = the cell directory
  std::vector<std::string> needles;  // what the one stderr line must contain ("{d}" expanded)
  bool needs_model;                  // false: refused before the model is read
};

std::string expand(std::string s, const fs::path& d) {
  for (std::size_t p; (p = s.find("{d}")) != std::string::npos;) s.replace(p, 3, d.string());
  return s;
}

/// The model option every cell passes: the cached file, or (option cells
/// without the model) a name that does not exist, never reached.
std::string model_arg() { return lqer_test::smollm2_gguf().string(); }

/// Where the matrix keeps its model files (outside the cell template, which
/// every cell copies: 250 MB a cell would be the whole test's time).
fs::path model_files_dir() { return fs::path(LQER_LLAMA_TEST_DIR) / ("models." + std::to_string(::getpid())); }
std::string model_file(const std::string& name) { return (model_files_dir() / name).string(); }

std::vector<cell_spec> cells() {
  std::vector<cell_spec> c;
  const auto opt = [&](const std::string& cmd, std::vector<std::string> extra, std::vector<std::string> needles) {
    std::vector<std::string> args = {cmd, "--model", model_arg()};
    if (cmd == "perplexity" || cmd == "eval" || cmd == "bench") args.insert(args.end(), {"--text", "{d}/kjv.txt"});
    if (cmd == "generate") args.insert(args.end(), {"--prompt", "Hi"});
    std::string name = cmd;
    for (const auto& a : extra) name += " '" + a + "'";
    args.insert(args.end(), extra.begin(), extra.end());
    c.push_back({name, std::move(args), std::move(needles), false});
  };
  // Commands and options that do not exist.
  c.push_back({"no command", {}, {"subcommand"}, false});
  c.push_back({"unknown command", {"frobnicate"}, {"frobnicate"}, false});
  opt("perplexity", {"--frobnicate", "1"}, {"--frobnicate"});
  // tokenize: exactly one of --text and --prompt.
  c.push_back({"tokenize, neither", {"tokenize", "--model", model_arg()}, {"--text", "--prompt"}, false});
  c.push_back({"tokenize, both",
               {"tokenize", "--model", model_arg(), "--prompt", "a", "--text", "{d}/kjv.txt"},
               {"--text", "--prompt"},
               false});
  // Counts out of range or not numbers.
  for (const std::string cmd : {"perplexity", "generate", "eval"})
    for (const std::string t : {"0", "257", "-1", "two", ""}) opt(cmd, {"--threads", t}, {"--threads"});
  for (const std::string v : {"1", "0", "-5", "x"}) opt("perplexity", {"--ctx", v}, {"--ctx"});
  for (const std::string v : {"-1", "many"}) opt("perplexity", {"--chunks", v}, {"--chunks"});
  for (const std::string v : {"0", "-3", "70000"}) opt("generate", {"-n", v}, {"-n"});
  c.push_back({"generate without --prompt", {"generate", "--model", model_arg()}, {"--prompt"}, false});
  // --quant and what goes with it.
  for (const std::string cmd : {"perplexity", "generate"}) {
    opt(cmd, {"--quant", "gptq"}, {"--quant", "gptq"});
    opt(cmd, {"--quant", ""}, {"--quant"});
    for (const std::string r : {"-1", "4097", "eight"}) opt(cmd, {"--quant", "lqer", "--rank", r}, {"--rank"});
    opt(cmd, {"--calib", "{d}/kjv.txt"}, {"--calib", "--quant"});
    opt(cmd, {"--quant", "l2qer", "--calib-chunks", "0"}, {"--calib-chunks"});
    opt(cmd, {"--output-format", "mxint8"}, {"--output-format", "--quant"});
  }
  for (const std::string cmd : {"perplexity", "generate", "eval", "bench"})
    for (const std::string v : {"q6_k", "", "MXINT8"}) {
      std::vector<std::string> a = {"--output-format", v};
      if (cmd == "perplexity" || cmd == "generate") a.insert(a.begin(), {"--quant", "plain"});
      opt(cmd, a, {"--output-format"});
    }
  // The format options (every command that quantizes; refused even without --quant).
  for (const std::string cmd : {"perplexity", "generate", "eval", "bench"}) {
    for (const std::string b : {"24", "64", "0", "-16"}) opt(cmd, {"--block", b}, {"block length " + b});
    opt(cmd, {"--block", "sixteen"}, {"--block"});
    opt(cmd, {"--weight-format", "mxint9"}, {"weight format 'mxint9'"});
    opt(cmd, {"--lowrank-format", "fp16"}, {"A/B format 'fp16'"});
    opt(cmd, {"--rule", "e8m0"}, {"exponent rule 'e8m0'"});
    opt(cmd, {"--rule", "ocp", "--lowrank-format", "mxint4"}, {"OCP rule", "mxint4"});
    for (const std::string v : {"-1", "nan", "inf", "tiny"}) opt(cmd, {"--damping", v}, {"--damping"});
  }
  // eval's and bench's lists.
  for (const std::string r : {"", "a", "8,,16", "0", "-1", "8;16", "99999999999"})
    opt("eval", {"--ranks", r}, {"--ranks"});
  for (const std::string m : {"", "plain", "gptq", "lqer,,l2qer", "LQER"}) opt("eval", {"--methods", m}, {"--methods"});
  for (const std::string b : {"", "24", "16,x"})
    opt("eval", {"--blocks", b}, {b == "24" ? "block length 24" : "--blocks"});
  for (const std::string v : {"0", "-1", "100000"}) opt("eval", {"--layer-rows", v}, {"--layer-rows"});
  opt("eval", {"--json", "{d}/no_such_dir/eval.json"}, {"{d}/no_such_dir/eval.json", "not an existing directory"});
  opt("eval", {"--json", "{d}"}, {"{d}", "directory"});
  for (const std::string r : {"-1", "a", ""}) opt("bench", {"--ranks", r}, {"--ranks"});
  for (const std::string t : {"0", "257", "1,,2", ""}) opt("bench", {"--threads-list", t}, {"--threads-list"});
  for (const std::string v : {"0", "101"}) opt("bench", {"--runs", v}, {"--runs"});
  opt("bench", {"--llama-bench", "{d}/none"}, {"{d}/none", "not an executable"});
  opt("bench", {"--llama-bench", "{d}"}, {"{d}", "not an executable"});
  opt("bench", {"--peer-models", "{d}/kjv.txt"}, {"--peer-models", "--llama-bench"});
  opt("bench", {"--llama-bench", "/bin/true", "--peer-models", "{d}/kjv.txt"}, {"{d}/kjv.txt"});
  opt("bench", {"--llama-bench", "/bin/true", "--peer-models", "a.gguf,,b.gguf"}, {"--peer-models", "empty entry"});
  // The files, found bad once read (the model cells need the model only to get past it).
  const auto file = [&](const std::string& name, std::vector<std::string> args, std::vector<std::string> needles,
                        bool needs_model) {
    c.push_back({name, std::move(args), std::move(needles), needs_model});
  };
  for (const std::string cmd : {"tokenize", "perplexity"}) {
    std::vector<std::string> tail = cmd == "tokenize" ? std::vector<std::string>{"--prompt", "a"}
                                                      : std::vector<std::string>{"--text", "{d}/kjv.txt"};
    const auto with_model = [&](const std::string& m) {
      std::vector<std::string> a = {cmd, "--model", m};
      a.insert(a.end(), tail.begin(), tail.end());
      return a;
    };
    file(cmd + ": --model missing", with_model("{d}/none.gguf"), {"{d}/none.gguf"}, false);
    file(cmd + ": --model a directory", with_model("{d}"), {"{d}"}, false);
    file(cmd + ": --model not GGUF", with_model("{d}/kjv.txt"), {"{d}/kjv.txt"}, false);
    file(cmd + ": --model empty", with_model("{d}/empty.gguf"), {"{d}/empty.gguf"}, false);
    file(cmd + ": --model truncated", with_model("{d}/truncated.gguf"), {"{d}/truncated.gguf"}, false);
  }
  file("tokenize: --text missing", {"tokenize", "--model", model_arg(), "--text", "{d}/none.txt"}, {"{d}/none.txt"},
       true);
  file("perplexity: --text missing", {"perplexity", "--model", model_arg(), "--text", "{d}/none.txt"}, {"{d}/none.txt"},
       true);
  file("perplexity: --text a directory", {"perplexity", "--model", model_arg(), "--text", "{d}"}, {"{d}"}, true);
  file("perplexity: --text shorter than one window",
       {"perplexity", "--model", model_arg(), "--text", "{d}/short.txt", "--ctx", "64"},
       {"{d}/short.txt", "fewer than one window of 64"}, true);
  file("perplexity: --calib missing",
       {"perplexity", "--model", model_arg(), "--text", "{d}/kjv.txt", "--ctx", "32", "--chunks", "1", "--quant",
        "l2qer", "--calib", "{d}/none.txt"},
       {"{d}/none.txt"}, true);
  file("eval: --calib shorter than one window",
       {"eval", "--model", model_arg(), "--text", "{d}/kjv.txt", "--calib", "{d}/short.txt", "--ctx", "64",
        "--layer-rows", "16"},
       {"{d}/short.txt", "fewer than"}, true);
  // --peers is read before the minutes of work, not when the table is printed.
  opt("eval", {"--peers", "{d}/short.txt", "--json", "{d}/eval.json"}, {"{d}/short.txt", "not JSON"});
  opt("eval", {"--peers", "{d}/none.json"}, {"{d}/none.json", "cannot be read"});
  opt("eval", {"--peers", "{d}/peers_not_object.json"}, {"{d}/peers_not_object.json", "files"});
  // quantize: refused before anything is read or computed.
  const auto qz = [&](std::vector<std::string> extra, std::vector<std::string> needles) {
    std::vector<std::string> args = {"quantize", "--model", model_arg()};
    std::string name = "quantize";
    for (const auto& a : extra) name += " '" + a + "'";
    args.insert(args.end(), extra.begin(), extra.end());
    c.push_back({name, std::move(args), std::move(needles), false});
  };
  qz({"--quant", "lqer"}, {"--out"});
  qz({"--out", "{d}/m.lqer.safetensors"}, {"--quant"});
  qz({"--quant", "lqer", "--rank", "8", "--bits-per-weight", "5", "--out", "{d}/m"}, {"--rank", "--bits-per-weight"});
  qz({"--quant", "plain", "--bits-per-weight", "5", "--out", "{d}/m"}, {"--bits-per-weight", "plain"});
  for (const std::string v : {"0.1", "33", "x", "nan"})
    qz({"--quant", "lqer", "--bits-per-weight", v, "--out", "{d}/m"}, {"--bits-per-weight"});
  for (const std::string v : {"0", "-1", "4097"})
    qz({"--quant", "lqer", "--bits-per-weight", "5", "--max-rank", v, "--out", "{d}/m"}, {"--max-rank"});
  qz({"--quant", "lqer", "--out", "{d}/no_such_dir/m.lqer.safetensors"},
     {"{d}/no_such_dir/m.lqer.safetensors", "directory"});
  file("quantize: --model not GGUF", {"quantize", "--model", "{d}/kjv.txt", "--quant", "lqer", "--out", "{d}/m"},
       {"{d}/kjv.txt", "not a GGUF"}, false);
  // A budget below what the 4-bit weights alone take: refused before any SVD.
  file("quantize: --bits-per-weight below the weights' own",
       {"quantize", "--model", model_arg(), "--quant", "lqer", "--bits-per-weight", "4.2", "--out", "{d}/m"},
       {"4.2", "less than the weights alone take"}, true);
  // Model files (a plain one, made once for the matrix): damaged, or given --quant.
  file("perplexity: model file with --quant",
       {"perplexity", "--model", model_file("plain.lqer.safetensors"), "--text", "{d}/kjv.txt", "--quant", "lqer"},
       {"--quant", "quantized model file already"}, true);
  file("perplexity: model file truncated",
       {"perplexity", "--model", model_file("cut.lqer.safetensors"), "--text", "{d}/kjv.txt"},
       {model_file("cut.lqer.safetensors")}, true);
  file("perplexity: model file with a flipped byte",
       {"perplexity", "--model", model_file("flipped.lqer.safetensors"), "--text", "{d}/kjv.txt"},
       {model_file("flipped.lqer.safetensors"), "checksum mismatch"}, true);
  file("eval: --ranks above a layer's dimension",
       {"eval", "--model", model_arg(), "--text", "{d}/kjv.txt", "--ranks", "577"}, {"--ranks", "577"}, true);
  return c;
}

}  // namespace

TEST_CASE("llama program: bad-input matrix") {
  const bool model = fs::exists(lqer_test::smollm2_gguf());
  if (!model) MESSAGE("skipped: the cells that read the model (run scripts/fetch_smollm2.sh)");
  lqer::test::cell_directories dirs(fs::path(LQER_LLAMA_TEST_DIR) / ("matrix." + std::to_string(::getpid())));
  write_bytes(dirs.tmpl / "kjv.txt", kjv_text());
  write_bytes(dirs.tmpl / "short.txt", "In the beginning\n");
  write_bytes(dirs.tmpl / "empty.gguf", "");
  write_bytes(dirs.tmpl / "peers_not_object.json", "[1, 2]\n");
  if (model) {
    // The first 64 KiB of the real file: a valid header whose tensors run past the end.
    std::ifstream in(lqer_test::smollm2_gguf(), std::ios::binary);
    std::string head(64 * 1024, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    write_bytes(dirs.tmpl / "truncated.gguf", head);
    // A plain model file (rank 0: no SVD, seconds), cut in half and with one byte flipped.
    fs::create_directories(model_files_dir());
    const std::string plain = model_file("plain.lqer.safetensors");
    run_ok(model_files_dir(), {"quantize", "--quant", "plain", "--out", plain, "--threads", "2"});
    const std::string bytes = lqer::test::slurp(plain);
    write_bytes(model_file("cut.lqer.safetensors"), bytes.substr(0, bytes.size() / 2));
    std::string flipped = bytes;
    flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x01);
    write_bytes(model_file("flipped.lqer.safetensors"), flipped);
  } else {
    write_bytes(dirs.tmpl / "truncated.gguf", "GGUF");
  }
  int run = 0, skipped = 0, n = 0;
  for (const cell_spec& c : cells()) {
    CAPTURE(c.name);
    if (c.needs_model && !model) {
      ++skipped;
      continue;
    }
    const fs::path d = dirs.cell("c" + std::to_string(n++));
    std::vector<std::string> args, needles;
    for (const auto& a : c.args) args.push_back(expand(a, d));
    for (const auto& s : c.needles) needles.push_back(expand(s, d));
    check_refused(dirs.root, d, args, needles);
    ++run;
    fs::remove_all(d);
  }
  MESSAGE("llama bad-input matrix: ", run, " cells run, ", skipped, " skipped without the model");
  std::error_code ec;
  fs::remove_all(model_files_dir(), ec);
  CHECK(run > 100);
}

TEST_CASE("llama program: --help is not an error") {
  scratch s("help");
  for (const std::string cmd : {"tokenize", "perplexity", "generate", "eval", "bench"}) {
    CAPTURE(cmd);
    const run_result r = run_lqer(s.dir, {cmd, "--help"});
    CHECK(r.exit_code == 0);
    CHECK(contains(r.out, "--model"));
  }
}
