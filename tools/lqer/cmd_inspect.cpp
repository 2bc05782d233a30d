// `lqer inspect FILE`: what an lqer safetensors file holds — for a checkpoint
// its layers (formats, shape, rank, bias, bits per weight, policy, solver), for
// a statistics file its width, counts and Gram mode, for both every tensor
// (dtype, shape, bytes) — after verifying every tensor's SHA-256 against the
// file's metadata and decoding every matrix of a checkpoint in its format
// (codes, scales and zero points checked as load() checks them; a format the
// format table does not instantiate, lqer/format/table.hpp, is listed as not
// decoded). The file is fully checked before anything is printed: a
// damaged file (a checksum mismatch, a truncated or malformed one) prints
// nothing on stdout and one sentence on stderr, exit status 2.
// --no-verify skips the hashing (the structure is still checked).
#include <fmt/core.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdint>
#include <lqer/calib/activation_stats.hpp>
#include <lqer/format/table.hpp>
#include <lqer/io/checkpoint.hpp>
#include <lqer/io/lqer_file.hpp>
#include <lqer/io/safetensors.hpp>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"

namespace lqer::cli {
namespace {

struct inspect_cli {
  std::string file;
  bool no_verify = false;
};

std::string shape_text(const io::safetensors_tensor& t) {
  std::string s = "[";
  for (std::size_t i = 0; i < t.shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(t.shape[i]);
  }
  return s + "]";
}

/// Every tensor's checksum, hashed; parse_error naming the first bad one (and how many) otherwise.
std::size_t verify(const io::safetensors_file& f) {
  std::size_t bad = 0;
  std::string first;
  for (const auto& t : f.tensors()) {
    const auto c = io::detail::checksum_of(f, t);
    if (!c.ok()) {
      if (bad++ == 0)
        first = "checksum mismatch in tensor " + io::detail::quoted_for_message(t.name) + ": its bytes hash to " +
                c.actual + ", the metadata says " + c.expected;
    }
  }
  if (bad > 0)
    throw parse_error(f.name() + ": " + first +
                      (bad > 1 ? " (and " + std::to_string(bad - 1) + " more tensors)" : std::string()) +
                      "; the file is damaged or was edited");
  return f.tensors().size();
}

int run_inspect(const inspect_cli& o) {
  io::load_options opt;
  opt.verify_checksums = false;  // verified below, all at once, whatever the schema
  io::safetensors_file f = io::safetensors_file::open(o.file, opt.limits);
  const auto schema = f.metadata().find(std::string(io::kSchemaKey));
  const std::string kind = schema == f.metadata().end() ? std::string() : schema->second;

  // Everything is checked before anything is printed.
  std::vector<std::string> lines;
  if (kind == io::kCheckpointSchema) {
    const io::checkpoint_file ck(std::move(f), opt);
    const std::size_t verified = o.no_verify ? 0 : verify(ck.file());
    const auto& fl = ck.file();
    // Every matrix decoded in its format (after the checksums: a damaged file
    // is reported as damaged, not as holding strange codes).
    std::size_t decoded = 0;
    std::vector<std::string> undecoded;
    for (const auto& l : ck.layers())
      for (const std::string part : {"wq", "a", "b"}) {
        if (part != "wq" && l.rank == 0) continue;
        const std::string& format = part == "wq" ? l.weight_format : l.lowrank_format;
        if (with_format_named(format, [&]<class F>(std::type_identity<F>) { (void)ck.load_matrix<F>(l.name, part); }))
          ++decoded;
        else
          undecoded.push_back(l.name + "." + part + " (" + format + ")");
      }
    lines.push_back(fmt::format("{}: lqer checkpoint, schema version {}, written by lqer {}: {} layer{}, {} tensors",
                                o.file, io::kCheckpointSchemaVersion, ck.writer_version(), ck.layers().size(),
                                ck.layers().size() == 1 ? "" : "s", fl.tensors().size()));
    lines.push_back("");
    lines.push_back(fmt::format("  {:<24} {:<18} {:<18} {:>13} {:>5} {:>4} {:>11}  {}", "layer", "weight", "low-rank",
                                "out x in", "rank", "bias", "bits/weight", "policy, solver"));
    std::uint64_t layer_bytes = 0;
    double weights = 0;
    for (const auto& l : ck.layers()) {
      layer_bytes += l.weight_bytes + l.lowrank_bytes;
      weights += double(l.out_features) * double(l.in_features);
      std::string how = l.policy.empty() ? "-" : l.policy;
      how += ", ";
      how += l.solver.empty() ? "-" : l.solver;
      lines.push_back(fmt::format("  {:<24} {:<18} {:<18} {:>13} {:>5} {:>4} {:>11.3f}  {}", l.name, l.weight_format,
                                  l.lowrank_format, fmt::format("{} x {}", l.out_features, l.in_features), l.rank,
                                  l.has_bias ? "yes" : "no", l.bits_per_weight(), how));
    }
    if (ck.layers().size() > 1)
      lines.push_back(fmt::format("  all layers: {:.3f} bits/weight (Wq, A and B: codes and block scales)",
                                  8.0 * double(layer_bytes) / weights));
    lines.push_back("");
    lines.push_back(fmt::format("  {:<32} {:<8} {:<14} {:>12}  {}", "tensor", "dtype", "shape", "bytes", "sha256"));
    for (const auto& t : fl.tensors())
      lines.push_back(fmt::format("  {:<32} {:<8} {:<14} {:>12}  {}", t.name, to_string(t.dtype), shape_text(t),
                                  t.data.size(), fl.metadata().at(std::string(io::kChecksumPrefix) + t.name)));
    lines.push_back("");
    lines.push_back(o.no_verify ? std::string("checksums: not verified (--no-verify)")
                                : fmt::format("checksums: {} of {} tensors verified", verified, fl.tensors().size()));
    lines.push_back(fmt::format("matrices: {} decoded in their formats and checked", decoded));
    for (const auto& u : undecoded)
      lines.push_back("  not decoded: " + u + ", a format the command line does not instantiate");
  } else if (kind == activation_stats::kSchema) {
    const activation_stats s = activation_stats::load(f, opt);
    const std::size_t verified = o.no_verify ? 0 : verify(f);
    lines.push_back(fmt::format(
        "{}: lqer calibration statistics, schema version {}, written by lqer {}: in_features {}, {} tokens in {} "
        "batch{}, Gram matrix {}",
        o.file, activation_stats::kSchemaVersion, f.metadata().at(std::string(io::kWriterVersionKey)), s.in_features(),
        s.tokens(), s.batches(), s.batches() == 1 ? "" : "es", s.has_gram() ? "yes" : "no"));
    lines.push_back("");
    lines.push_back(fmt::format("  {:<24} {:<8} {:<14} {:>12}", "tensor", "dtype", "shape", "bytes"));
    for (const auto& t : f.tensors())
      lines.push_back(
          fmt::format("  {:<24} {:<8} {:<14} {:>12}", t.name, to_string(t.dtype), shape_text(t), t.data.size()));
    lines.push_back("");
    lines.push_back(o.no_verify ? std::string("checksums: not verified (--no-verify)")
                                : fmt::format("checksums: {} of {} tensors verified", verified, f.tensors().size()));
  } else {
    throw parse_error(o.file + ": not an lqer file: " +
                      (kind.empty() ? "its metadata has no " + std::string(io::kSchemaKey) + " key"
                                    : std::string(io::kSchemaKey) + " is " + io::detail::quoted_for_message(kind)) +
                      " (lqer inspect reads \"" + std::string(io::kCheckpointSchema) + "\" and \"" +
                      std::string(activation_stats::kSchema) + "\" files)");
  }
  for (const auto& l : lines) fmt::print("{}\n", l);
  return 0;
}

}  // namespace

command add_inspect_command(CLI::App& parent) {
  auto o = std::make_shared<inspect_cli>();
  CLI::App* sub = parent.add_subcommand(
      "inspect",
      "Print what an lqer file holds (a checkpoint's layers, formats, ranks and bits per weight; a statistics "
      "file's width and counts; every tensor) after verifying every tensor's checksum.");
  sub->add_option("FILE", o->file, "An lqer checkpoint or statistics file (.safetensors)")->required();
  sub->add_flag("--no-verify", o->no_verify, "Do not hash the tensors (the structure is still checked)");
  sub->footer(
      "Exit status: 0 when the file is sound; 2 when it cannot be read, is not an lqer file, is malformed, or a\n"
      "checksum does not match (one sentence on stderr naming the file and the tensor; nothing on stdout).\n"
      "Example: lqer inspect layer0/layer.safetensors");
  return command{sub, [o] { return run_inspect(*o); }};
}

}  // namespace lqer::cli
