// lqer Python package — the module lqer._lqer: statistics, factorize, layers
// and their files, Linear, threads and kernel paths. The Python package
// (src/lqer/__init__.py) wraps these with shape handling for any number of
// leading dimensions and with torch tensors; this layer takes 2-D arrays.
//
// Every call that computes for long releases the GIL (statistics batches,
// factorize, Linear, file I/O) after its arguments are read: the arrays it
// views stay alive because their Python objects are held by the call's frame.
// Objects that mutate (ActivationStats) hold a mutex, so two Python threads
// adding to one accumulator are serialized, not racing.
#include <nanobind/stl/filesystem.h>
#include <nanobind/stl/map.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/pair.h>
#include <nanobind/stl/shared_ptr.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/vector.h>

#include <filesystem>
#include <lqer/error.hpp>
#include <lqer/format/table.hpp>
#include <lqer/kernel/dispatch.hpp>
#include <mutex>
#include <optional>
#include <thread>

#include "common.hpp"
#include "factorize_choice.hpp"
#include "formats.hpp"

namespace lqer::py {

// ---------------------------------------------------------------------------
// Threads

namespace {
std::mutex& pool_mutex() {
  static std::mutex m;
  return m;
}
std::unique_ptr<thread_pool_executor>& pool_slot() {
  static std::unique_ptr<thread_pool_executor> p;
  return p;
}
}  // namespace

thread_pool_executor& pool() {
  const std::lock_guard lock(pool_mutex());
  auto& p = pool_slot();
  if (!p) p = std::make_unique<thread_pool_executor>(0);  // 0: the hardware's concurrency
  return *p;
}

void set_num_threads(int n) {
  if (n < 1 || n > 1024) throw value_error("set_num_threads: n must be in [1, 1024], got " + std::to_string(n));
  const std::lock_guard lock(pool_mutex());
  // Replacing the pool while another thread runs a kernel on it would pull it
  // from under that call: documented as not allowed during a forward.
  pool_slot() = std::make_unique<thread_pool_executor>(n);
}

int num_threads() { return pool().concurrency(); }

namespace {

// ---------------------------------------------------------------------------
// Statistics

/// activation_stats with a mutex: add/merge may come from several threads.
struct stats_object {
  activation_stats stats;
  mutable std::mutex m;
  explicit stats_object(activation_stats s) : stats(std::move(s)) {}
};

numpy_out<double> vector_out(std::vector<double> v) {
  const std::size_t n = v.size();
  return to_numpy(std::move(v), {n});
}
numpy_out<float> matrix_out(std::vector<float> v, index_t rows, index_t cols) {
  return to_numpy(std::move(v), {static_cast<std::size_t>(rows), static_cast<std::size_t>(cols)});
}

// ---------------------------------------------------------------------------
// Layers

cli::mx_spec parse_mx(const std::string& format, int block, const std::string& rule, const char* role) {
  cli::mx_spec s;
  s.format = format;
  s.block = block;
  const std::optional<mx_rule> r = parse_mx_rule(rule);
  if (!r) throw value_error(std::string(role) + ": rule must be 'ocp' or 'lqer', not '" + rule + "'");
  s.rule = *r;
  if (const format_entry* f = find_format(format); f && f->family == format_family::ggml) {  // no exponent rule
    if (block != kGgmlBlock)
      throw value_error(std::string(role) + ": " + format + " has blocks of " + std::to_string(kGgmlBlock) + ", not " +
                        std::to_string(block) + " (pass block=" + std::to_string(kGgmlBlock) + ")");
    return s;
  }
  if (s.bits() == 0)  // not an MX name of the format table
    throw value_error(std::string(role) + ": '" + format + "' is not an MX integer format (" +
                      list_text(mx_bits{}, "mxint") + ") nor one of llama.cpp's (" + ggml_layers_text() + ")");
  return s;
}

std::shared_ptr<layer_base> factorize_any(matrix_view<const float> w, const activation_stats& stats,
                                          const factorize_args& args) {
  if (args.w.block == 16) return factorize_block<16>(w, stats, args);
  if (args.w.block == 32) return factorize_block<32>(w, stats, args);
  throw value_error("block must be 16 or 32 (the weight's, the factors' and the activations' block), not " +
                    std::to_string(args.w.block));
}

std::shared_ptr<layer_base> load_any(const io::checkpoint_file& f, const io::checkpoint_layer& info) {
  if (auto l = load_block<16>(f, info)) return l;
  if (auto l = load_block<32>(f, info)) return l;
  throw value_error(f.name() + ": layer '" + info.name + "' is stored as " + info.weight_format + " with A/B " +
                    info.lowrank_format + ": the Python package reads MX weights of block 16 or 32 and llama.cpp's " +
                    ggml_layers_text());
}

nb::dict report_dict(const layer_base& l) {
  nb::dict d;
  d["weight_format"] = l.weight_format();
  d["lowrank_format"] = l.lowrank_format();
  d["policy"] = l.info.policy;
  d["solver"] = l.info.solver;
  d["rank"] = l.rank();
  d["in_features"] = l.in_features();
  d["out_features"] = l.out_features();
  if (!l.report) return d;
  const factorize_report& r = *l.report;
  d["error_norm"] = r.error_norm;
  d["residual_norm"] = r.residual_norm;
  d["residual_norm_quantized"] = r.residual_norm_quantized;
  d["activation_basis"] = r.activation_basis;
  d["activation_error"] = r.activation_error;
  d["activation_residual"] = r.activation_residual;
  d["activation_residual_quantized"] = r.activation_residual_quantized;
  d["whiten_lambda"] = r.whiten_lambda;
  d["singular_values"] = r.singular_values;
  nb::dict s;
  s["stats"] = r.seconds.stats;
  s["quantize"] = r.seconds.quantize;
  s["svd"] = r.seconds.svd;
  s["lowrank_quantize"] = r.seconds.lowrank_quantize;
  s["report"] = r.seconds.report;
  s["total"] = r.seconds.total;
  d["seconds"] = s;
  return d;
}

using layer_ptr = std::shared_ptr<layer_base>;

void save_layers(const std::string& path, const std::vector<std::pair<std::string, layer_ptr>>& layers) {
  io::checkpoint_writer w;
  for (const auto& [name, l] : layers) {
    if (!l) throw value_error("save: layer '" + name + "' is None");
    l->add_to(w, name);
  }
  const nb::gil_scoped_release release;
  w.write(path);
}

// ---------------------------------------------------------------------------
// Linear

struct linear_object {
  layer_ptr layer;
  std::shared_ptr<linear_base> impl;
  std::string mode;
};

linear_object make_linear(const layer_ptr& layer, const std::string& act_format, const std::string& reference) {
  if (!layer) throw value_error("Linear: layer is None");
  linear_mode mode = linear_mode::kernel;
  if (reference == "fused")
    mode = linear_mode::reference_fused;
  else if (reference == "paper")
    mode = linear_mode::reference_paper;
  else if (!reference.empty())
    throw value_error("Linear: reference must be None, 'fused' or 'paper', not '" + reference + "'");
  // Empty: the weight's natural activations (llama.cpp's layers: their table
  // entry's, q8_0; else mxint8).
  const std::string act = !act_format.empty() ? act_format : layer->default_activation();
  std::shared_ptr<linear_base> impl;
  {
    const nb::gil_scoped_release release;  // packing a large layer takes a while
    impl = make_linear_block<16>(layer, act, mode);
    if (!impl) impl = make_linear_block<32>(layer, act, mode);
  }
  if (!impl) throw value_error("Linear: no kernel for " + layer->weight_format() + " with " + act);
  return linear_object{layer, std::move(impl), reference.empty() ? "kernel" : "reference_" + reference};
}

numpy_out<float> linear_call(const linear_object& l, const f32_in& x) {
  std::vector<float> storage;
  std::vector<std::size_t> shape;
  const matrix_view<const float> xv = as_rows(x, storage, "Linear: x", &shape);
  if (xv.cols != l.impl->in_features())
    throw shape_error("Linear: x has " + std::to_string(xv.cols) + " features, the layer takes " +
                      std::to_string(l.impl->in_features()));
  std::vector<float> y(static_cast<std::size_t>(xv.rows * l.impl->out_features()));
  {
    const nb::gil_scoped_release release;
    l.impl->forward(xv, matrix_view<float>(y.data(), xv.rows, l.impl->out_features()));
  }
  shape.push_back(static_cast<std::size_t>(l.impl->out_features()));
  return to_numpy(std::move(y), shape);
}

}  // namespace
}  // namespace lqer::py

using namespace lqer;
using namespace lqer::py;

NB_MODULE(_lqer, m) {
  m.doc() = "lqer's compiled core (use the lqer package, which wraps it)";
  m.attr("__version__") = kVersionString;

  // Errors: a bad argument or shape is a ValueError, a damaged or foreign
  // file a ValueError subclass (FileFormatError), an unreadable file OSError.
  static nb::exception<parse_error> file_format_error(m, "FileFormatError", PyExc_ValueError);
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const parse_error& e) {
      PyErr_SetString(file_format_error.ptr(), e.what());
    } catch (const io_error& e) {
      PyErr_SetString(PyExc_OSError, e.what());
    } catch (const shape_error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const value_error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const cli::usage_error& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const unsupported_error& e) {
      PyErr_SetString(PyExc_NotImplementedError, e.what());
    }
  });

  // Threads and kernel paths.
  m.def("set_num_threads", &set_num_threads, nb::arg("n"),
        "Threads of the pool the fused kernels run on (default: the hardware's). Not while a forward runs.");
  m.def("get_num_threads", &num_threads, "Threads of the kernels' pool.");
  m.def(
      "kernel_paths",
      [] {
        nb::dict d;
        std::vector<std::string> built, usable;
        for (const kernel_path p : built_paths()) built.emplace_back(to_string(p));
        for (const kernel_path p : usable_paths()) usable.emplace_back(to_string(p));
        d["built"] = built;
        d["usable"] = usable;
        d["best"] = std::string(to_string(best_path()));
        return d;
      },
      "The fused kernel's paths: built into this module, usable on this CPU, and the one Linear runs.");

  bind_formats(m);

  // ActivationStats.
  nb::class_<stats_object>(m, "ActivationStats",
                           "Streaming calibration statistics of a layer's input: per-channel mean |x| and mean x², and "
                           "optionally the Gram matrix Σ x xᵀ (for policy='whiten'). Exact under merge: statistics "
                           "collected in pieces and merged equal one pass over everything.")
      .def(
          "__init__",
          [](stats_object* self, index_t in_features, bool gram) {
            new (self) stats_object(activation_stats(in_features, gram ? gram_mode::on : gram_mode::off));
          },
          nb::arg("in_features"), nb::arg("gram") = false)
      .def(
          "add",
          [](stats_object& s, const f32_in& x) {
            std::vector<float> storage;
            const auto xv = as_rows(x, storage, "ActivationStats.add: x");
            const nb::gil_scoped_release release;
            const std::lock_guard lock(s.m);
            s.stats.add_batch(xv);
          },
          nb::arg("x"),
          "Adds a batch x [..., in_features] (float32; numpy, torch or any DLPack array): every leading index is "
          "one token.")
      .def(
          "merge",
          [](stats_object& s, const stats_object& other) {
            if (&s == &other) throw value_error("ActivationStats.merge: cannot merge statistics into themselves");
            const nb::gil_scoped_release release;
            const std::scoped_lock lock(s.m, other.m);
            s.stats.merge(other.stats);
          },
          nb::arg("other"), "Adds other's statistics (same in_features and gram mode) to these.")
      .def(
          "save",
          [](const stats_object& s, const std::filesystem::path& path) {
            const nb::gil_scoped_release release;
            const std::lock_guard lock(s.m);
            s.stats.save(path);
          },
          nb::arg("path"), "Writes the statistics file (safetensors; atomically: all or nothing).")
      .def_static(
          "load",
          [](const std::filesystem::path& path, bool verify) {
            io::load_options o;
            o.verify_checksums = verify;
            activation_stats st;
            {
              const nb::gil_scoped_release release;
              st = activation_stats::load(path, o);
            }
            return new stats_object(std::move(st));
          },
          nb::arg("path"), nb::arg("verify") = true, "Reads a statistics file (lqer's C++ side reads the same files).")
      .def_prop_ro("in_features", [](const stats_object& s) { return s.stats.in_features(); })
      .def_prop_ro("tokens", [](const stats_object& s) { return s.stats.tokens(); })
      .def_prop_ro("batches", [](const stats_object& s) { return s.stats.batches(); })
      .def_prop_ro("has_gram", [](const stats_object& s) { return s.stats.has_gram(); })
      .def_prop_ro(
          "mean_abs", [](const stats_object& s) { return vector_out(s.stats.mean_abs()); }, nb::rv_policy::move)
      .def_prop_ro(
          "mean_square", [](const stats_object& s) { return vector_out(s.stats.mean_square()); }, nb::rv_policy::move)
      .def_prop_ro(
          "rms", [](const stats_object& s) { return vector_out(s.stats.rms()); }, nb::rv_policy::move)
      .def(
          "gram",
          [](const stats_object& s) {
            const Eigen::MatrixXd g = s.stats.gram();
            std::vector<double> v(static_cast<std::size_t>(g.size()));
            Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(v.data(), g.rows(),
                                                                                               g.cols()) = g;
            return to_numpy(std::move(v), {static_cast<std::size_t>(g.rows()), static_cast<std::size_t>(g.cols())});
          },
          "The Gram matrix Σ x xᵀ / tokens [in, in] (float64); ValueError without gram=True.");

  // Layer.
  nb::class_<layer_base>(m, "Layer",
                         "A factorized layer: Wq in a 4-bit block format, the rank-k correction A·B in 8 bits, the "
                         "bias. Made by factorize() or read by load().")
      .def_prop_ro("weight_format", &layer_base::weight_format)
      .def_prop_ro("lowrank_format", &layer_base::lowrank_format)
      .def_prop_ro("block", &layer_base::block)
      .def_prop_ro("in_features", &layer_base::in_features)
      .def_prop_ro("out_features", &layer_base::out_features)
      .def_prop_ro("rank", &layer_base::rank)
      .def_prop_ro("policy", [](const layer_base& l) { return l.info.policy; })
      .def_prop_ro("solver", [](const layer_base& l) { return l.info.solver; })
      .def_prop_ro("storage_bytes", &layer_base::storage_bytes, "Bytes of Wq, A and B (codes and scales) and the bias.")
      .def_prop_ro(
          "bits_per_weight",
          [](const layer_base& l) {
            const double bias_bytes = 4.0 * double(l.bias().size());
            return 8.0 * (double(l.storage_bytes()) - bias_bytes) /
                   (double(l.in_features()) * double(l.out_features()));
          },
          "Bits of Wq + A + B (codes and scales) per weight of W.")
      .def_prop_ro(
          "wq", [](const layer_base& l) { return matrix_out(l.wq(), l.out_features(), l.in_features()); },
          nb::rv_policy::move, "deq(Wq) [out, in], float32 (a new array).")
      .def_prop_ro(
          "a", [](const layer_base& l) { return matrix_out(l.a(), l.in_features(), l.rank()); }, nb::rv_policy::move,
          "deq(A) [in, rank], float32.")
      .def_prop_ro(
          "b", [](const layer_base& l) { return matrix_out(l.b(), l.rank(), l.out_features()); }, nb::rv_policy::move,
          "deq(B) [rank, out], float32.")
      .def_prop_ro(
          "bias",
          [](const layer_base& l) -> std::optional<numpy_out<float>> {
            if (l.bias().empty()) return std::nullopt;
            return to_numpy(l.bias(), {l.bias().size()});
          },
          nb::rv_policy::move, "The bias [out], or None.")
      .def_prop_ro(
          "scale",
          [](const layer_base& l) -> std::optional<numpy_out<float>> {
            if (l.scale.empty()) return std::nullopt;
            return to_numpy(l.scale, {l.scale.size()});
          },
          nb::rv_policy::move, "The diagonal policy's scale s [in] (None for whiten, and for a loaded layer).")
      .def_prop_ro("report", &report_dict, "What factorize() measured (formats only for a loaded layer).")
      .def(
          "save",
          [](const layer_ptr& self, const std::filesystem::path& path, const std::string& name) {
            save_layers(path.string(), {{name, self}});
          },
          nb::arg("path"), nb::arg("name") = "layer",
          "Writes this layer to an LQER checkpoint (see lqer.save), atomically.");

  m.def(
      "_factorize_2d",
      [](const f32_in& w, const stats_object* stats, index_t rank, const std::string& policy, const std::string& solver,
         const std::string& w_format, const std::string& lr_format, int block, const std::string& rule,
         const std::string& lr_rule, double damping, const std::string& whiten_factorization,
         std::optional<index_t> oversampling, std::optional<int> power_iterations,
         std::optional<std::vector<float>> bias) -> layer_ptr {
        if (!cli::is_policy_name(policy))
          throw value_error("policy must be identity, mean_abs, rms or whiten, not '" + policy + "'");
        if (solver != "randomized" && solver != "exact")
          throw value_error("solver must be 'randomized' or 'exact', not '" + solver + "'");
        if (whiten_factorization != "cholesky" && whiten_factorization != "eigen")
          throw value_error("whiten_factorization must be 'cholesky' or 'eigen', not '" + whiten_factorization + "'");
        factorize_args a;
        a.rank = rank;
        a.policy = policy;
        a.solver = solver;
        a.w = parse_mx(w_format, block, rule, "w_format");
        a.lr = parse_mx(lr_format, block, lr_rule.empty() ? rule : lr_rule, "lr_format");
        a.damping = damping;
        a.whiten_factorization = whiten_factorization;
        if (oversampling) a.oversampling = *oversampling;
        if (power_iterations) a.power_iterations = *power_iterations;
        if (bias) a.bias = std::move(*bias);
        std::vector<float> storage;
        const auto wv = as_matrix(w, storage, "factorize: W");
        const activation_stats none;
        std::unique_lock<std::mutex> lock;
        if (stats) lock = std::unique_lock(stats->m);
        const nb::gil_scoped_release release;
        return factorize_any(wv, stats ? stats->stats : none, a);
      },
      nb::arg("w"), nb::arg("stats").none(), nb::arg("rank"), nb::arg("policy"), nb::arg("solver"), nb::arg("w_format"),
      nb::arg("lr_format"), nb::arg("block"), nb::arg("rule"), nb::arg("lr_rule"), nb::arg("damping"),
      nb::arg("whiten_factorization"), nb::arg("oversampling").none(), nb::arg("power_iterations").none(),
      nb::arg("bias").none());

  m.def(
      "layer_names",
      [](const std::filesystem::path& path) {
        const auto f = io::checkpoint_file::open(path, io::load_options{false, {}});
        std::vector<std::string> names;
        for (const auto& l : f.layers()) names.push_back(l.name);
        return names;
      },
      nb::arg("path"), "The names of the layers a checkpoint holds, sorted.");
  m.def(
      "_load",
      [](const std::filesystem::path& path, std::optional<std::string> name, bool verify) {
        io::load_options o;
        o.verify_checksums = verify;
        std::vector<std::pair<std::string, layer_ptr>> out;
        const nb::gil_scoped_release release;
        const auto f = io::checkpoint_file::open(path, o);
        for (const auto& l : f.layers())
          if (!name || l.name == *name) out.emplace_back(l.name, load_any(f, l));
        if (name && out.empty()) (void)f.layer(*name);  // throws, listing the layers it has
        return out;
      },
      nb::arg("path"), nb::arg("name").none(), nb::arg("verify"));
  m.def("_save", &save_layers, nb::arg("path"), nb::arg("layers"));

  // Linear.
  nb::class_<linear_object>(m, "_Linear")
      .def(
          "__init__",
          [](linear_object* self, const layer_ptr& layer, const std::string& act_format, const std::string& reference) {
            new (self) linear_object(make_linear(layer, act_format, reference));
          },
          nb::arg("layer"), nb::arg("act_format"), nb::arg("reference"))
      .def("__call__", &linear_call, nb::arg("x"))
      .def_prop_ro("in_features", [](const linear_object& l) { return l.impl->in_features(); })
      .def_prop_ro("out_features", [](const linear_object& l) { return l.impl->out_features(); })
      .def_prop_ro("act_format", [](const linear_object& l) { return l.impl->activation_format(); })
      .def_prop_ro("mode", [](const linear_object& l) { return l.mode; })
      .def_prop_ro("layer", [](const linear_object& l) { return l.layer; });
}
