// The bad-input matrix of the `use_lite` program (examples/use_lite/main.cpp),
// after tests/tools/test_bad_input_matrix.cpp: every input of every subcommand
// (the model directory's model.json, shards and vocab.json, the sentence and
// calibration files, the numeric and named options, embed's --out) × every way
// it can be bad. Each cell runs the program as a process on a fresh copy of a
// directory of good inputs with one thing broken, and expects
//
//   exit status 2 (main.cpp: "a usage error or an lqer::error"), nothing on
//   stdout, exactly one line on stderr naming the file or option at fault,
//   and the directory byte-for-byte as it was before the run: no --out
//   created or modified, no input touched, no temporary left.
//
// The last check is one snapshot comparison of the whole cell directory, which
// holds out/emb.npy with known bytes ("old content") before every run, so a run
// that rewrote or half-wrote it would be caught.
//
// The model is not in the repository (tests/examples/CMakeLists.txt): the
// template copies model.json and vocab.json from where the program finds it
// ($LQER_USE_LITE_MODEL, else the cache), and each cell gets the seven shards
// (27 MB) as hard links to the cache's files (copies when the cache is on
// another filesystem) — not symlinks, which the reader refuses when they lead
// out of the model directory. A cell that breaks a shard first replaces it by
// a file of its own, so the cache is never written through. Without the
// model, the cells that need it are skipped with a MESSAGE; the option cells
// (refused before anything is loaded) run regardless. The sentences come from
// the TF.js fixture in data/.
//
// The model-file cells (quantize's output, read back by embed and tokenize)
// run on a template that also holds model.lqer.safetensors, which the fixture
// makes once with `use_lite quantize` from the cache's model.
//
// POSIX only (support/process.hpp runs the program through /bin/sh).
#include <doctest/doctest.h>
#include <unistd.h>

#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <lqer/io/checkpoint.hpp>
#include <lqer/io/npy.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "support/files.hpp"
#include "support/process.hpp"
#include "text.hpp"
#include "tfjs_weights.hpp"

namespace fs = std::filesystem;

namespace {

using lqer::test::check_refused;
using lqer::test::contains;
using lqer::test::one_line;
using lqer::test::run_lqer;  // runs LQER_CLI_PATH, here the use_lite program
using lqer::test::run_result;
using lqer::test::slurp;
using lqer::test::write_bytes;

const std::string kOld = "old content";
const std::string kModelFile = "model.lqer.safetensors";
const std::string kEmbeddings = "module/Embeddings_en";  // the weight the NaN cells poison

// ---------------------------------------------------------------------------
// The good inputs, shared by every cell
//
//   model/          model.json, vocab.json (copies), group1-shard*of7 (links)
//   sentences.txt   3 sentences of the fixture
//   calib.txt       6 others
//   out/emb.npy     "old content" (embed's --out)
//   model.lqer.safetensors   with_model_file only: `use_lite quantize --quant lqer --rank 8`

/// The fixture's sentences [first, last) as a file's text, one per line.
std::string fixture_lines(std::size_t first, std::size_t last) {
  const auto lines = use_lite::read_lines(fs::path(LQER_USE_LITE_FIXTURE_DIR) / "use_lite_sentences.txt");
  REQUIRE(lines.size() >= last);
  std::string text;
  for (std::size_t i = first; i < last; ++i) text += lines[i] + "\n";
  return text;
}

struct fixture : lqer::test::cell_directories {
  bool model = false;
  std::vector<fs::path> shards;  // the cache's shard files, linked into every cell

  explicit fixture(const std::string& name, bool with_model_file = false)
      : cell_directories(fs::path(LQER_USE_LITE_TEST_DIR) / ("matrix_" + name + "." + std::to_string(::getpid()))) {
    fs::create_directories(tmpl / "model");
    fs::create_directories(tmpl / "out");
    const fs::path src = use_lite::default_model_dir();
    model = fs::exists(src / "model.json") && fs::exists(src / "vocab.json");
    if (model) {
      for (const auto& e : fs::directory_iterator(src)) {
        if (!e.is_regular_file()) continue;
        const std::string file = e.path().filename().string();
        if (file == "model.json" || file == "vocab.json")
          fs::copy_file(e.path(), tmpl / "model" / file);
        else
          shards.push_back(fs::absolute(e.path()));
      }
    } else {
      MESSAGE("skipped: the cells that read the model (no USE-lite model in " << src.string()
                                                                              << "; run scripts/fetch_use_lite.sh)");
    }
    write_bytes(tmpl / "sentences.txt", fixture_lines(0, 3));
    write_bytes(tmpl / "calib.txt", fixture_lines(3, 9));
    write_bytes(tmpl / "out" / "emb.npy", kOld);
    if (model && with_model_file) {
      const run_result r = run_lqer(root, {"quantize", "--model", src.string(), "--quant", "lqer", "--rank", "8",
                                           "--threads", "2", "--out", (tmpl / kModelFile).string()});
      CAPTURE(r.err);
      REQUIRE(r.exit_code == 0);
    }
  }

  /// A fresh copy of the template with the shards linked in.
  fs::path cell(const std::string& name) const {
    const fs::path d = cell_directories::cell(name);
    for (const fs::path& s : shards) {
      const fs::path link = d / "model" / s.filename();
      std::error_code ec;
      fs::create_hard_link(s, link, ec);
      if (ec) fs::copy_file(s, link);  // another filesystem: a copy
    }
    return d;
  }
};

/// `p` as a file of the cell's own: a shard (a hard link to the cache's file)
/// is replaced by a copy, so that writing to it cannot reach the cache.
void own(const fs::path& p) {
  const std::string bytes = slurp(p);
  fs::remove(p);
  write_bytes(p, bytes);
}

/// Replaces `p` (file or link) with `bytes`.
void replace(const fs::path& p, const std::string& bytes) {
  fs::remove(p);
  write_bytes(p, bytes);
}

/// Replaces `p` with an empty directory.
void make_directory(const fs::path& p) {
  fs::remove(p);
  fs::create_directory(p);
}

// ---------------------------------------------------------------------------
// Command lines

using option_list = std::vector<std::pair<std::string, std::string>>;

/// The good command line of `cmd` on the inputs in `d`, with `changes` applied:
/// an option already there gets the new value ("<drop>": removed), another is
/// appended ("" value: a flag). `cmd` is tokenize, embed, embed-rms (embed
/// --quant rms with --calib), eval (the smallest table: rank 0, one policy,
/// one thread count, one timing run), quantize (lqer rank 8 to
/// out/model.lqer.safetensors), quantize-rms (rms rank 8 with --calib), or
/// embed-file and tokenize-file (on the template's model file).
std::vector<std::string> command_line(const std::string& cmd, const fs::path& d, const option_list& changes = {}) {
  const std::string model = (d / "model").string(), sentences = (d / "sentences.txt").string(),
                    calib = (d / "calib.txt").string(), out = (d / "out" / "emb.npy").string();
  option_list opts;
  std::string sub = cmd;
  if (cmd == "tokenize") {
    opts = {{"--model", model}, {"--sentences", sentences}};
  } else if (cmd == "embed") {
    opts = {{"--model", model}, {"--sentences", sentences}, {"--out", out}};
  } else if (cmd == "embed-file" || cmd == "tokenize-file") {
    sub = cmd.substr(0, cmd.find('-'));
    opts = {{"--model", (d / kModelFile).string()}, {"--sentences", sentences}};
    if (sub == "embed") opts.emplace_back("--out", out);
  } else if (cmd == "quantize" || cmd == "quantize-rms") {
    sub = "quantize";
    opts = {{"--model", model},
            {"--quant", cmd == "quantize" ? "lqer" : "rms"},
            {"--rank", "8"},
            {"--out", (d / "out" / kModelFile).string()}};
    if (cmd == "quantize-rms") opts.emplace_back("--calib", calib);
  } else if (cmd == "embed-rms") {
    sub = "embed";
    opts = {{"--model", model}, {"--sentences", sentences}, {"--out", out}, {"--quant", "rms"},
            {"--rank", "8"},    {"--calib", calib}};
  } else {
    REQUIRE(cmd == "eval");
    opts = {{"--model", model},         {"--calib", calib},      {"--sentences", sentences}, {"--ranks", "0"},
            {"--policies", "identity"}, {"--threads-list", "1"}, {"--timing-runs", "1"},     {"--layer-rows", "16"}};
  }
  for (const auto& [key, value] : changes) {
    bool found = false;
    for (auto it = opts.begin(); it != opts.end(); ++it)
      if (it->first == key) {
        found = true;
        if (value == "<drop>")
          opts.erase(it);
        else
          it->second = value;
        break;
      }
    if (!found) opts.emplace_back(key, value);
  }
  std::vector<std::string> args = {sub};
  for (const auto& [key, value] : opts) {
    args.push_back(key);
    if (!value.empty() || key == "--ranks" || key == "--policies" || key == "--out") args.push_back(value);
  }
  return args;
}

// ---------------------------------------------------------------------------
// The table

/// One cell: a command line and what breaks it.
struct cell_spec {
  std::string name;
  std::string cmd;                              // see command_line
  option_list changes;                          // options changed on the command line ("{d}" = the cell directory)
  std::function<void(const fs::path& d)> make;  // breaks an input in the cell directory (or nothing)
  std::vector<std::string> needles;             // what the one stderr line must contain
  bool needs_model = true;                      // false: refused before anything is read
  bool expect_ok = false;                       // a cell the program must accept
};

/// `s` with every "{d}" replaced by the cell directory.
std::string expand(std::string s, const fs::path& d) {
  for (std::size_t p; (p = s.find("{d}")) != std::string::npos;) s.replace(p, 3, d.string());
  return s;
}

void run_cells(const std::string& name, const std::vector<cell_spec>& cells, bool with_model_file = false) {
  fixture fx(name, with_model_file);
  int run = 0, skipped = 0, n = 0;
  for (const cell_spec& c : cells) {
    const std::string cell = c.cmd + ": " + c.name;
    CAPTURE(cell);
    if (c.needs_model && !fx.model) {
      ++skipped;
      continue;
    }
    const fs::path d = fx.cell("c" + std::to_string(n++));
    if (c.make) c.make(d);
    option_list changes = c.changes;
    for (auto& kv : changes) kv.second = expand(kv.second, d);
    const auto args = command_line(c.cmd, d, changes);
    if (c.expect_ok) {
      const run_result r = run_lqer(fx.root, args);
      CAPTURE(r.err);
      CHECK(r.exit_code == 0);
    } else {
      std::vector<std::string> needles;
      for (const auto& s : c.needles) needles.push_back(expand(s, d));
      check_refused(fx.root, d, args, needles);
    }
    ++run;
    fs::remove_all(d);
  }
  MESSAGE(name, ": ", run, " cells run, ", skipped, " skipped without the model");
  CHECK((run > 0 || !fx.model));  // without the model, a table of model cells runs none
}

// --- model.json, edited as JSON --------------------------------------------

/// Edits model.json in the cell directory: `f` gets the parsed document and
/// the manifest entry of the embedding table.
std::function<void(const fs::path&)> edit_model_json(std::function<void(nlohmann::json& doc, nlohmann::json& emb)> f) {
  return [f](const fs::path& d) {
    const fs::path p = d / "model" / "model.json";
    nlohmann::json doc = nlohmann::json::parse(slurp(p));
    nlohmann::json* emb = nullptr;
    for (auto& g : doc.at("weightsManifest"))
      for (auto& w : g.at("weights"))
        if (w.at("name") == kEmbeddings) emb = &w;
    REQUIRE(emb != nullptr);
    f(doc, *emb);
    replace(p, doc.dump());
  };
}

/// The shard holding the embedding table's first bytes, and the offset of its
/// element `i` in that shard (from the manifest and the shards' sizes).
std::pair<std::string, std::uint64_t> embedding_location(const fs::path& model_dir, std::uint64_t i) {
  const std::string text = slurp(model_dir / "model.json");
  const use_lite::tfjs_manifest m = use_lite::parse_tfjs_manifest(text, "model.json");
  std::uint64_t offset = 0;
  bool found = false;
  for (const auto& e : m.entries)
    if (e.name == kEmbeddings) {
      offset = e.offset + 4 * i;
      found = true;
    }
  REQUIRE(found);
  for (const auto& g : m.groups)
    for (const auto& p : g.paths) {
      const std::uint64_t size = fs::file_size(model_dir / p);
      if (offset < size) return {p, offset};
      offset -= size;
    }
  FAIL("the embedding table lies outside the shards");
  return {};
}

/// Writes `v` over element 5 of the embedding table, in the cell's own copy of its shard.
std::function<void(const fs::path&)> poison_embeddings(float v) {
  return [v](const fs::path& d) {
    const auto [shard, offset] = embedding_location(d / "model", 5);
    const fs::path p = d / "model" / shard;
    own(p);
    std::string bytes = slurp(p);
    std::memcpy(bytes.data() + offset, &v, sizeof v);
    write_bytes(p, bytes);
  };
}

/// The shard holding the embedding table (the one the shard cells break).
std::string embedding_shard(const fs::path& d) { return embedding_location(d / "model", 0).first; }

std::function<void(const fs::path&)> on_shard(std::function<void(const fs::path& shard)> f) {
  return [f](const fs::path& d) {
    const fs::path p = d / "model" / embedding_shard(d);
    own(p);
    f(p);
  };
}

// --- the cells ----------------------------------------------------------------

/// Cells for a file every listed command reads: missing, empty, a directory.
void add_file_cells(std::vector<cell_spec>& cells, const std::vector<std::string>& cmds, const std::string& file,
                    bool empty_ok_for_tokenize = false) {
  const std::string leaf = fs::path(file).filename().string();
  for (const auto& cmd : cmds) {
    cells.push_back({"missing " + file, cmd, {}, [file](const fs::path& d) { fs::remove(d / file); }, {leaf}});
    cells.push_back({"empty " + file,
                     cmd,
                     {},
                     [file](const fs::path& d) { replace(d / file, ""); },
                     {leaf},
                     true,
                     cmd == "tokenize" && empty_ok_for_tokenize});
    cells.push_back(
        {"a directory as " + file, cmd, {}, [file](const fs::path& d) { make_directory(d / file); }, {leaf}});
  }
}

std::vector<cell_spec> vocab_cells() {
  std::vector<cell_spec> cells;
  add_file_cells(cells, {"tokenize", "embed"}, "model/vocab.json");
  const auto vocab = [](std::function<void(nlohmann::json&)> f) {
    return [f](const fs::path& d) {
      const fs::path p = d / "model" / "vocab.json";
      nlohmann::json v = nlohmann::json::parse(slurp(p));
      f(v);
      replace(p, v.dump());
    };
  };
  for (const std::string cmd : {"tokenize", "embed"}) {
    cells.push_back({"truncated vocab.json",
                     cmd,
                     {},
                     [](const fs::path& d) {
                       const std::string v = slurp(d / "model" / "vocab.json");
                       replace(d / "model" / "vocab.json", v.substr(0, v.size() / 2));
                     },
                     {"vocab.json"}});
    cells.push_back({"vocab.json not a list",
                     cmd,
                     {},
                     vocab([](nlohmann::json& v) {
                       v = {{"a", 1}};
                     }),
                     {"vocab.json"}});
    cells.push_back({"vocab.json of 3 entries",
                     cmd,
                     {},
                     vocab([](nlohmann::json& v) {
                       v = nlohmann::json::array({v[0], v[1], v[2]});
                     }),
                     {"vocab.json"}});
    cells.push_back(
        {"vocab.json entry not a pair", cmd, {}, vocab([](nlohmann::json& v) { v[100] = 5; }), {"vocab.json"}});
    cells.push_back({"vocab.json score not a number",
                     cmd,
                     {},
                     vocab([](nlohmann::json& v) { v[100][1] = "high"; }),
                     {"vocab.json"}});
  }
  // A piece listed again at id 8002 (the last id wins, tokenizer.hpp): the
  // first sentence's first piece gets an id the embedding table does not have.
  // tokenize has no table and prints the id; embed must name both files.
  const auto beyond_table = vocab([](nlohmann::json& v) {
    const nlohmann::json piece = v[133];  // "▁In", the first sentence's first token (data/use_lite_tokens.txt)
    v.push_back(nlohmann::json::array({"extra_a", -100.0}));
    v.push_back(nlohmann::json::array({"extra_b", -100.0}));
    v.push_back(piece);
  });
  cells.push_back({"vocab.json longer than the embedding table", "tokenize", {}, beyond_table, {}, true, true});
  cells.push_back({"vocab.json longer than the embedding table",
                   "embed",
                   {},
                   beyond_table,
                   {"vocab.json", "model.json", "8003 entries"}});
  return cells;
}

std::vector<cell_spec> model_cells() {
  using nlohmann::json;
  std::vector<cell_spec> cells;
  add_file_cells(cells, {"embed"}, "model/model.json");
  const auto add = [&](const std::string& name, std::function<void(const fs::path&)> make,
                       std::vector<std::string> needles) {
    cells.push_back({name, "embed", {}, std::move(make), std::move(needles)});
  };
  add("truncated model.json",
      [](const fs::path& d) {
        const std::string t = slurp(d / "model" / "model.json");
        replace(d / "model" / "model.json", t.substr(0, t.size() / 2));
      },
      {"model.json", "not valid JSON"});
  add("model.json not an object", [](const fs::path& d) { replace(d / "model" / "model.json", "[1, 2, 3]"); },
      {"model.json", "not a JSON object"});
  add("model.json without weightsManifest", [](const fs::path& d) { replace(d / "model" / "model.json", "{}"); },
      {"model.json", "weightsManifest"});
  add("weight dtype int32 (same bytes)", edit_model_json([](json&, json& e) { e["dtype"] = "int32"; }),
      {"model.json", kEmbeddings, "int32, expected float32"});
  add("weight dtype float16 (TF.js, not read)", edit_model_json([](json&, json& e) { e["dtype"] = "float16"; }),
      {"model.json", kEmbeddings, "float16"});
  add("weight dtype unknown", edit_model_json([](json&, json& e) { e["dtype"] = "float99"; }),
      {"model.json", kEmbeddings, "float99"});
  add("weight dtype not a string", edit_model_json([](json&, json& e) { e["dtype"] = 4; }),
      {"model.json", kEmbeddings, "dtype"});
  add("weight shape transposed (same bytes)", edit_model_json([](json&, json& e) {
        e["shape"] = {256, 8002};
      }),
      {"model.json", kEmbeddings, "[256, 8002], expected [8002, 256]"});
  add("weight shape 3-D (same bytes)", edit_model_json([](json&, json& e) {
        e["shape"] = {1, 8002, 256};
      }),
      {"model.json", kEmbeddings, "[1, 8002, 256]"});
  add("weight shape one row short (shards too long)", edit_model_json([](json&, json& e) {
        e["shape"] = {8001, 256};
      }),
      {"model.json", "bytes but its weights need"});
  add("weight shape one row long (shards too short)", edit_model_json([](json&, json& e) {
        e["shape"] = {8003, 256};
      }),
      {"model.json", "truncated?"});
  add("weight shape negative", edit_model_json([](json&, json& e) {
        e["shape"] = {-8002, 256};
      }),
      {"model.json", kEmbeddings, "non-negative"});
  add("weight shape not integers", edit_model_json([](json&, json& e) {
        e["shape"] = {8002.5, 256};
      }),
      {"model.json", kEmbeddings, "non-negative integers"});
  add("weight shape of 2^60 elements", edit_model_json([](json&, json& e) {
        e["shape"] = {std::uint64_t{1} << 40, std::uint64_t{1} << 20};
      }),
      {"model.json", kEmbeddings, "holds more than"});
  add("weight renamed (missing)", edit_model_json([](json&, json& e) { e["name"] = "module/Embeddings_xx"; }),
      {"model.json", "no weight", kEmbeddings});
  add("weight listed twice", edit_model_json([](json& doc, json&) {
        // Another weight renamed after the table: the bytes still add up.
        for (auto& w : doc["weightsManifest"][0]["weights"])
          if (w["name"] != kEmbeddings) {
            w["name"] = kEmbeddings;
            break;
          }
      }),
      {"model.json", kEmbeddings, "listed twice"});
  add("quantized weight", edit_model_json([](json&, json& e) {
        e["quantization"] = {{"dtype", "uint8"}, {"scale", 1.0}, {"min", 0.0}};
      }),
      {"model.json", kEmbeddings, "quantized"});
  add("shard path outside the model directory",
      edit_model_json([](json& doc, json&) { doc["weightsManifest"][0]["paths"][0] = "../calib.txt"; }),
      {"model.json", "../calib.txt", "not a plain file name"});
  add("shard path absolute",
      edit_model_json([](json& doc, json&) { doc["weightsManifest"][0]["paths"][0] = "/etc/passwd"; }),
      {"model.json", "/etc/passwd", "not a plain file name"});
  add("shard path not a string", edit_model_json([](json& doc, json&) { doc["weightsManifest"][0]["paths"][0] = 7; }),
      {"model.json", "paths[0]"});
  // Shards that resolve outside the model directory: a symlink to the real
  // shard elsewhere (the right bytes: only the place is wrong), one through
  // "..", a chain; one that stays inside is followed.
  add("shard a symlink out of the model directory",
      [](const fs::path& d) {
        const std::string shard = embedding_shard(d);
        fs::rename(d / "model" / shard, d / shard);
        fs::create_symlink(d / shard, d / "model" / shard);
      },
      {"group1-shard", "outside the model directory"});
  add("shard a relative symlink through ..",
      [](const fs::path& d) {
        const std::string shard = embedding_shard(d);
        fs::remove(d / "model" / shard);
        fs::create_symlink("../sentences.txt", d / "model" / shard);
      },
      {"group1-shard", "outside the model directory"});
  add("shard a symlink to a symlink out of the model directory",
      [](const fs::path& d) {
        const std::string shard = embedding_shard(d);
        fs::rename(d / "model" / shard, d / shard);
        fs::create_symlink(d / shard, d / "model" / "hop");
        fs::create_symlink("hop", d / "model" / shard);
      },
      {"group1-shard", "outside the model directory"});
  cells.push_back({"shard a symlink inside the model directory",
                   "embed",
                   {},
                   [](const fs::path& d) {
                     const std::string shard = embedding_shard(d);
                     fs::create_directory(d / "model" / "blobs");
                     fs::rename(d / "model" / shard, d / "model" / "blobs" / shard);
                     fs::create_symlink(fs::path("blobs") / shard, d / "model" / shard);
                   },
                   {},
                   true,
                   true});
  // JSON nested 200,000 deep where a shape's dimension should be: once a
  // stack overflow (the message printed it with a recursive dump), now
  // refused while parsing. And a shallow nesting, named shortly.
  const auto shape_text = [](std::string text) {
    return [text](const fs::path& d) {
      edit_model_json([](json&, json& e) { e["shape"] = "SHAPE"; })(d);
      const fs::path p = d / "model" / "model.json";
      std::string t = slurp(p);
      const std::size_t at = t.find("\"SHAPE\"");
      REQUIRE(at != std::string::npos);
      replace(p, t.replace(at, 7, text));
    };
  };
  add("weight shape nested 200000 deep", shape_text(std::string(200000, '[') + "1" + std::string(200000, ']')),
      {"model.json", "nested deeper than 64"});
  add("weight shape nested", shape_text("[[8002, 256]]"),
      {"model.json", kEmbeddings, "array starting [[8002", "non-negative integers"});
  add("shard listed that does not exist",
      edit_model_json([](json& doc, json&) { doc["weightsManifest"][0]["paths"][0] = "group1-shard0of7"; }),
      {"group1-shard0of7"});

  // The shards (the one holding the embedding table).
  add("missing shard", [](const fs::path& d) { fs::remove(d / "model" / embedding_shard(d)); }, {"group1-shard"});
  add("empty shard", on_shard([](const fs::path& p) { write_bytes(p, ""); }), {"model.json", "truncated?"});
  add("a directory as a shard", [](const fs::path& d) { make_directory(d / "model" / embedding_shard(d)); },
      {"group1-shard"});
  add("shard 4 bytes short", on_shard([](const fs::path& p) {
        const std::string b = slurp(p);
        write_bytes(p, b.substr(0, b.size() - 4));
      }),
      {"model.json", "group1-shard", "truncated?"});
  add("shard 4 bytes long", on_shard([](const fs::path& p) { write_bytes(p, slurp(p) + "abcd"); }),
      {"model.json", "group1-shard", "bytes but its weights need"});
  add("NaN weight", poison_embeddings(std::numeric_limits<float>::quiet_NaN()),
      {"model.json", kEmbeddings, "element 5 is not finite"});
  add("+Inf weight", poison_embeddings(std::numeric_limits<float>::infinity()),
      {"model.json", kEmbeddings, "element 5 is not finite"});
  add("-Inf weight", poison_embeddings(-std::numeric_limits<float>::infinity()),
      {"model.json", kEmbeddings, "element 5 is not finite"});
  // eval reads the model through the same loader: one cell says it is refused there too.
  cells.push_back({"NaN weight",
                   "eval",
                   {},
                   poison_embeddings(std::numeric_limits<float>::quiet_NaN()),
                   {"model.json", "not finite"}});
  return cells;
}

std::vector<cell_spec> text_cells() {
  std::vector<cell_spec> cells;
  // An empty sentence file: tokenize prints nothing (and succeeds), embed has
  // nothing to embed, eval needs 3 sentences.
  add_file_cells(cells, {"tokenize", "embed", "eval"}, "sentences.txt", /*empty_ok_for_tokenize=*/true);
  cells.push_back({"2 evaluation sentences",
                   "eval",
                   {},
                   [](const fs::path& d) { write_bytes(d / "sentences.txt", fixture_lines(0, 2)); },
                   {"sentences.txt", "at least 3"}});
  add_file_cells(cells, {"embed-rms", "eval", "quantize-rms"}, "calib.txt");
  return cells;
}

cell_spec option(const std::string& cmd, option_list changes, std::vector<std::string> needles,
                 bool needs_model = false) {
  std::string name;
  for (const auto& [k, v] : changes) name += k + " '" + v + "' ";
  return {name, cmd, std::move(changes), nullptr, std::move(needles), needs_model};
}

std::vector<cell_spec> option_cells() {
  std::vector<cell_spec> c;
  // Thread counts (tokenize and embed take --threads, in [1, 256]).
  for (const std::string cmd : {"tokenize", "embed"})
    for (const std::string t : {"0", "-1", "257", "99999999999", "two", "1.5", ""})
      c.push_back(option(cmd, {{"--threads", t}}, {"--threads"}));
  // Options and commands that do not exist, required options left out.
  c.push_back(option("tokenize", {{"--frobnicate", "1"}}, {"--frobnicate"}));
  c.push_back(option("tokenize", {{"--sentences", "<drop>"}}, {"--sentences"}));
  c.push_back(option("embed", {{"--out", "<drop>"}}, {"--out"}));
  c.push_back(option("eval", {{"--threads", "2"}}, {"--threads"}));  // eval times --threads-list instead
  // embed's quantization options.
  c.push_back(option("embed", {{"--quant", "gptq"}}, {"--quant", "gptq"}));
  c.push_back(option("embed", {{"--quant", ""}}, {"--quant"}));
  for (const std::string r : {"-1", "513", "eight", "99999999999"})
    c.push_back(option("embed-rms", {{"--rank", r}}, {"--rank"}));
  c.push_back(option("embed-rms", {{"--rank", "300"}}, {"--rank", "rank 300", "l0.qkv"}, true));
  c.push_back(option("embed", {{"--calib", "{d}/calib.txt"}}, {"--calib", "--quant"}));
  c.push_back(option("embed-rms", {{"--calib", "<drop>"}}, {"--quant rms", "--calib"}));
  // Format options, for embed (with or without --quant) and eval.
  for (const std::string cmd : {"embed", "embed-rms", "eval"}) {
    for (const std::string b : {"24", "0", "-16", "1048576"})
      c.push_back(option(cmd, {{"--block", b}}, {"block length " + b}));
    c.push_back(option(cmd, {{"--block", "sixteen"}}, {"--block"}));
    c.push_back(option(cmd, {{"--weight-format", "mxint9"}}, {"weight format 'mxint9'"}));
    c.push_back(option(cmd, {{"--lowrank-format", "fp16"}}, {"A/B format 'fp16'"}));
    c.push_back(option(cmd, {{"--rule", "e8m0"}}, {"exponent rule 'e8m0'"}));
    c.push_back(option(cmd, {{"--rule", "ocp"}, {"--weight-format", "mxint3"}}, {"OCP rule", "mxint3"}));
    c.push_back(option(cmd, {{"--mode", "exact"}}, {"--mode", "exact"}));
    for (const std::string v : {"-1", "nan", "inf", "-inf"})
      c.push_back(option(cmd, {{"--damping", v}}, {"--damping"}));
    c.push_back(option(cmd, {{"--damping", "tiny"}}, {"--damping"}));
  }
  // quantize's options: the method, --rank or the budget, the model.
  c.push_back(option("quantize", {{"--out", "<drop>"}}, {"--out"}));
  c.push_back(option("quantize", {{"--quant", "<drop>"}}, {"--quant"}));
  c.push_back(option("quantize", {{"--quant", "gptq"}}, {"--quant", "gptq"}));
  c.push_back(option("quantize", {{"--sentences", "{d}/sentences.txt"}}, {"--sentences"}));
  c.push_back(option("quantize", {{"--bits-per-weight", "5"}}, {"--rank", "--bits-per-weight", "not both"}));
  c.push_back(option("quantize", {{"--rank", "<drop>"}, {"--quant", "plain"}, {"--bits-per-weight", "5"}},
                     {"--bits-per-weight", "plain"}));
  for (const std::string v : {"0", "0.4", "33", "nan", "five", ""})
    c.push_back(option("quantize", {{"--rank", "<drop>"}, {"--bits-per-weight", v}}, {"--bits-per-weight"}));
  for (const std::string v : {"0", "-8", "513", "x"})
    c.push_back(
        option("quantize", {{"--rank", "<drop>"}, {"--bits-per-weight", "5"}, {"--max-rank", v}}, {"--max-rank"}));
  for (const std::string r : {"-1", "513", "eight"}) c.push_back(option("quantize", {{"--rank", r}}, {"--rank"}));
  for (const std::string t : {"0", "257", "two"}) c.push_back(option("quantize", {{"--threads", t}}, {"--threads"}));
  c.push_back(option("quantize", {{"--block", "24"}}, {"block length 24"}));
  c.push_back(option("quantize", {{"--weight-format", "mxint9"}}, {"weight format 'mxint9'"}));
  c.push_back(option("quantize", {{"--mode", "exact"}}, {"--mode", "exact"}));
  // A model file as quantize's input: it reads the TF.js directory (the path
  // need not exist: a .safetensors name is taken for a model file).
  c.push_back(option("quantize", {{"--model", "{d}/m.lqer.safetensors"}},
                     {"--model", "{d}/m.lqer.safetensors", "model file already"}));
  c.push_back(option("quantize", {{"--rank", "300"}}, {"--rank", "rank 300", "l0.qkv"}, true));
  // Refused after the layers are factorized (the weights' 4.5 bits alone
  // exceed it): still nothing written.
  c.push_back(option("quantize", {{"--rank", "<drop>"}, {"--bits-per-weight", "4"}},
                     {"4.000000 bits per weight", "less than the weights alone take"}, true));
  // eval's lists and counts.
  for (const std::string r : {"", "a", "8,,16", "-1", "8,-1", "99999999999", "8;16"})
    c.push_back(option("eval", {{"--ranks", r}}, {"--ranks"}));
  c.push_back(option("eval", {{"--ranks", "0,300"}}, {"--ranks", "rank 300", "l0.qkv"}, true));
  for (const std::string p : {"", "gptq", "identity,,rms", "Identity"})
    c.push_back(option("eval", {{"--policies", p}}, {"--policies"}));
  for (const std::string t : {"0", "257", "-2", "x", "1,,2"})
    c.push_back(option("eval", {{"--threads-list", t}}, {"--threads-list"}));
  c.push_back(option("eval", {{"--layer-ranks", "8,8,8"}}, {"--layer-ranks", "10"}));
  c.push_back(option("eval", {{"--layer-ranks", "8,8,8,8,8,-8,8,8,8,8"}}, {"--layer-ranks", ">= 0"}));
  c.push_back(option("eval", {{"--layer-ranks", "8,8,8,8,8,8,8,8,8,x"}}, {"--layer-ranks"}));
  c.push_back(
      option("eval", {{"--layer-ranks", "8,8,8,8,8,8,8,8,8,600"}}, {"--layer-ranks", "rank 600", "tanh"}, true));
  for (const std::string v : {"0", "-1", "2000000", "many"})
    c.push_back(option("eval", {{"--layer-rows", v}}, {"--layer-rows"}));
  for (const std::string v : {"0", "101", "-5"}) c.push_back(option("eval", {{"--timing-runs", v}}, {"--timing-runs"}));
  return c;
}

std::vector<cell_spec> output_cells() {
  std::vector<cell_spec> c;
  for (const std::string cmd : {"embed", "embed-rms"}) {
    c.push_back(
        option(cmd, {{"--out", "{d}/no_such_dir/emb.npy"}}, {"{d}/no_such_dir/emb.npy", "not an existing directory"}));
    c.push_back(option(cmd, {{"--out", "{d}/out"}}, {"{d}/out", "directory"}));
    c.push_back(option(cmd, {{"--out", "{d}/out/"}}, {"{d}/out/", "directory"}));
    c.push_back(option(cmd, {{"--out", "{d}/out/emb.npy/x.npy"}}, {"{d}/out/emb.npy/x.npy"}));
    c.push_back(option(cmd, {{"--out", ""}}, {"--out"}));
  }
  // A directory nobody may create files in, found out only when the
  // embeddings are written (mode 0500 does not stop root; /proc stops everyone).
  c.push_back(option("embed", {{"--out", "/proc/use_lite_emb.npy"}}, {"/proc/use_lite_emb.npy"}, true));
  // quantize's --out: checked before the model is read, and by the writer.
  c.push_back(option("quantize", {{"--out", "{d}/no_such_dir/m.lqer.safetensors"}},
                     {"{d}/no_such_dir/m.lqer.safetensors", "not an existing directory"}));
  c.push_back(option("quantize", {{"--out", "{d}/out"}}, {"{d}/out", "directory"}));
  c.push_back(option("quantize", {{"--out", ""}}, {"--out"}));
  c.push_back(
      option("quantize", {{"--out", "/proc/use_lite.lqer.safetensors"}}, {"/proc/use_lite.lqer.safetensors"}, true));
  return c;
}

// --- the model file ------------------------------------------------------------

/// Replaces the first occurrence of `from` in the cell's model file by `to`
/// (of the same length: the header's length prefix stays right).
std::function<void(const fs::path&)> edit_model_file(std::string from, std::string to) {
  return [from, to](const fs::path& d) {
    REQUIRE(from.size() == to.size());
    std::string bytes = slurp(d / kModelFile);
    const std::size_t at = bytes.find(from);
    REQUIRE(at != std::string::npos);
    bytes.replace(at, from.size(), to);
    replace(d / kModelFile, bytes);
  };
}

std::vector<cell_spec> model_file_cells() {
  std::vector<cell_spec> c;
  const std::string file = kModelFile;
  // What is no model file for this engine: truncated, empty, damaged, another kind.
  for (const std::string cmd : {"embed-file", "tokenize-file"}) {
    c.push_back({"truncated model file",
                 cmd,
                 {},
                 [](const fs::path& d) {
                   const std::string b = slurp(d / kModelFile);
                   replace(d / kModelFile, b.substr(0, b.size() / 2));
                 },
                 {file}});
    c.push_back({"model file 1 byte short",
                 cmd,
                 {},
                 [](const fs::path& d) {
                   const std::string b = slurp(d / kModelFile);
                   replace(d / kModelFile, b.substr(0, b.size() - 1));
                 },
                 {file}});
    c.push_back({"empty model file", cmd, {}, [](const fs::path& d) { replace(d / kModelFile, ""); }, {file}});
    c.push_back({"model file of another kind",
                 cmd,
                 {},
                 edit_model_file("lqer.use_lite.v1", "lqer.use_lite.v9"),
                 {file, "not a use_lite model file", "lqer.use_lite.v9"}});
    c.push_back({"model file of other shapes",
                 cmd,
                 {},
                 edit_model_file("\"use_lite.vocab\":\"8002\"", "\"use_lite.vocab\":\"8003\""),
                 {file, "use_lite.vocab", "8002"}});
  }
  // A damaged byte in the middle of the file: inside some tensor (the header
  // is a few kB of 10 MB), whose checksum names it.
  c.push_back({"a damaged byte in a tensor",
               "embed-file",
               {},
               [](const fs::path& d) {
                 std::string b = slurp(d / kModelFile);
                 b[b.size() / 2] = static_cast<char>(b[b.size() / 2] ^ 0x10);
                 replace(d / kModelFile, b);
               },
               {file, "checksum mismatch"}});
  // Another engine's model file: an LQER checkpoint that says it is llama's.
  c.push_back({"a llama model file",
               "embed-file",
               {{"--model", "{d}/llama.lqer.safetensors"}},
               [](const fs::path& d) {
                 lqer::io::checkpoint_writer w;
                 const std::vector<float> norm(8, 1.0f);
                 const std::vector<lqer::index_t> shape{8};
                 w.add_tensor<float>("output_norm", shape, norm);
                 w.set_metadata("llama.file", "lqer.llama.v1");
                 w.write(d / "llama.lqer.safetensors");
               },
               {"llama.lqer.safetensors", "not a use_lite model file", "llama.file is 'lqer.llama.v1'"}});
  // A safetensors file that is no LQER checkpoint, and a file that is no safetensors.
  c.push_back({"a plain safetensors file",
               "embed-file",
               {{"--model", "{d}/plain.safetensors"}},
               [](const fs::path& d) {
                 lqer::io::safetensors_writer w;
                 const std::vector<float> v(8, 1.0f);
                 const std::vector<lqer::index_t> shape{8};
                 w.add("x", lqer::io::safetensors_dtype::f32, shape, std::as_bytes(std::span<const float>(v)));
                 w.write(d / "plain.safetensors");
               },
               {"plain.safetensors", "not an lqer checkpoint"}});
  c.push_back(
      {"a text file as the model file", "embed-file", {{"--model", "{d}/sentences.txt"}}, nullptr, {"sentences.txt"}});
  c.push_back({"a model file that does not exist",
               "embed-file",
               {{"--model", "{d}/none.lqer.safetensors"}},
               nullptr,
               {"none.lqer.safetensors"}});
  // Options that only the TF.js model takes.
  c.push_back({"--quant with a model file",
               "embed-file",
               {{"--quant", "rms"}, {"--calib", "{d}/calib.txt"}},
               nullptr,
               {"--quant", file, "quantized model file already"}});
  c.push_back(
      {"--calib with a model file", "embed-file", {{"--calib", "{d}/calib.txt"}}, nullptr, {"--calib", "--quant"}});
  // --against: a reference of the wrong shape, a file that is no .npy.
  c.push_back({"--against of 2 rows for 3 sentences",
               "embed-file",
               {{"--against", "{d}/ref.npy"}},
               [](const fs::path& d) {
                 const std::vector<float> v(2 * 512, 0.0f);
                 lqer::io::write_npy_matrix(d / "ref.npy", v.data(), 2, 512);
               },
               {"ref.npy", "3 x 512"}});
  c.push_back({"--against a text file", "embed-file", {{"--against", "{d}/calib.txt"}}, nullptr, {"calib.txt"}});
  return c;
}

}  // namespace

TEST_CASE("use_lite bad-input matrix: the good inputs are accepted") {
  // Without this, every refused cell below could pass on a broken template.
  std::vector<cell_spec> cells = {
      {"good inputs", "tokenize", {}, nullptr, {}, true, true},
      {"good inputs", "embed", {}, nullptr, {}, true, true},
  };
  run_cells("good", cells);
}

TEST_CASE("use_lite bad-input matrix: model/vocab.json") { run_cells("vocab", vocab_cells()); }
TEST_CASE("use_lite bad-input matrix: model/model.json and its shards") { run_cells("model", model_cells()); }
TEST_CASE("use_lite bad-input matrix: --sentences and --calib files") { run_cells("text", text_cells()); }
TEST_CASE("use_lite bad-input matrix: options of every subcommand") { run_cells("options", option_cells()); }
TEST_CASE("use_lite bad-input matrix: embed --out") { run_cells("output", output_cells()); }
TEST_CASE("use_lite bad-input matrix: a model file quantize wrote") {
  // The good cells first: without them every refused cell could pass on a broken template.
  std::vector<cell_spec> cells = {
      {"good inputs", "embed-file", {}, nullptr, {}, true, true},
      {"good inputs", "tokenize-file", {}, nullptr, {}, true, true},
      {"good inputs", "quantize", {}, nullptr, {}, true, true},
  };
  for (auto& c : model_file_cells()) cells.push_back(std::move(c));
  run_cells("model_file", cells, /*with_model_file=*/true);
}

TEST_CASE("use_lite bad-input matrix: no command, an unknown command") {
  const fs::path dir = fs::path(LQER_USE_LITE_TEST_DIR) / ("matrix_commands." + std::to_string(::getpid()));
  fs::create_directories(dir);
  struct bad_command {
    std::vector<std::string> args;
    const char* needle;
  };
  for (const bad_command& b : {bad_command{{}, "subcommand"}, bad_command{{"frobnicate"}, "frobnicate"},
                               bad_command{{"--frobnicate"}, "--frobnicate"}}) {
    const std::string needle = b.needle;
    CAPTURE(needle);
    const run_result r = run_lqer(dir, b.args);
    CAPTURE(r.err);
    CHECK(r.exit_code == 2);
    CHECK(r.out.empty());
    CHECK(one_line(r.err));
    CHECK(contains(r.err, needle));
  }
  // --help is not an error: the help on stdout, status 0.
  const run_result help = run_lqer(dir, {"embed", "--help"});
  CHECK(help.exit_code == 0);
  CHECK(contains(help.out, "--out"));
  std::error_code ec;
  fs::remove_all(dir, ec);
}

TEST_CASE("use_lite quantize stopped by SIGTERM or SIGINT exits 130 and leaves the directory as it was") {
  const fixture f("interrupt");
  if (!f.model) return;
  const fs::path d = f.cell("interrupt");
  write_bytes(d / "out" / kModelFile, kOld);  // an older file at --out stays as it was
  const auto before = lqer::test::snapshot(d);
  // The signal comes once calibration is done; the layers' factorization
  // (a second or more on one thread) polls the flag after every layer.
  for (const int sig : {SIGTERM, SIGINT}) {
    CAPTURE(sig);
    auto args = command_line("quantize-rms", d, {{"--threads", "1"}});
    const auto r = lqer::test::run_and_signal_at(args, "use_lite quantize: calibrated on", sig);
    CAPTURE(r.err);
    CHECK(r.exit_code == 130);
    CHECK(contains(r.err, "nothing was written"));
    const std::string diff = lqer::test::differences(before, lqer::test::snapshot(d));
    CHECK_MESSAGE(diff.empty(), diff);
  }
}
