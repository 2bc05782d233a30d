// llama — configuration, weights and the forward pass (see model.hpp).
#include "model.hpp"

#include <algorithm>
#include <cmath>
#include <initializer_list>
#include <limits>
#include <lqer/io/gguf.hpp>
#include <numeric>
#include <xsimd/xsimd.hpp>

namespace llama {

namespace {

using cview = lqer::matrix_view<const float>;
using mview = lqer::matrix_view<float>;

// Floating-point contraction. GCC (in its default GNU mode, -ffp-contract=fast)
// may fuse any a·b + c into an FMA, and decides per compiled copy of the code:
// a task body inlined into thread_pool::parallel_for's inline loop (one
// thread, or one task) and the same body behind the pool's job thunk (2
// threads) were compiled differently, so logits differed between 1 and 2
// threads by an ulp that MXINT8 rounding then carried through the blocks.
// The float code below therefore leaves nothing to contract: every
// multiply-add it means is an explicit std::fma, and no product feeds an add
// or subtract (q is scaled before the dot product, not the score after it).

/// Rows per task of the row-wise steps (norms, residuals, SwiGLU, RoPE): fixed,
/// so a row's arithmetic never depends on the thread count.
constexpr index_t kRowChunk = 16;
/// Query rows per attention task (one head each).
constexpr index_t kQueryChunk = 16;
/// Up to this many rows, linears that share their input run as one task each
/// (see run_same_input in forward): GEMV-sized work, where a parallel_for
/// round trip per layer costs more than splitting a layer gains.
constexpr index_t kLayerTaskRows = 4;

using fbatch = xsimd::batch<float>;  // the widest float vector this build targets
constexpr index_t kFloatLanes = static_cast<index_t>(fbatch::size);

/// a·b over `n` (= N when N > 0, a compile-time length): one vector of
/// partial sums (vector FMAs), reduced by xsimd's hadd (a fixed tree), then
/// the tail in order. The order is fixed by n alone, whatever the thread.
/// Written with xsimd because GCC vectorized the plain-loop version only
/// sometimes (a 16-lane array of sums came out as 16 scalar chains).
template <index_t N>
inline float dot(const float* a, const float* b, index_t n) {
  const index_t len = N > 0 ? N : n;
  fbatch acc(0.0f);
  index_t e = 0;
  for (; e + kFloatLanes <= len; e += kFloatLanes)
    acc = xsimd::fma(fbatch::load_unaligned(a + e), fbatch::load_unaligned(b + e), acc);
  float s = xsimd::hadd(acc);
  for (; e < len; ++e) s = std::fma(a[e], b[e], s);
  return s;
}

/// One query row of causal attention for one head: o = Σ_j p_j·v_j with
/// p = softmax(q·k_j·scale) over the keys j < keys, K and V rows `stride`
/// floats apart (the head's slice of the cache), s scratch for `keys` scores
/// and `scratch` for 2·hd floats (used when HD = 0).
/// HD is the head dimension when known at compile time (SmolLM2: 64), which
/// keeps o's accumulators in registers: written through a pointer, the
/// compiler must store and reload o for every key (it may alias V). 0: any
/// head dimension, `hd`.
template <index_t HD>
void attend_row(const float* qr, const float* K, const float* V, index_t stride, index_t keys, index_t hd, float scale,
                float* s, float* scratch, float* o) {
  const index_t n = HD > 0 ? HD : hd;
  // qs = q·scale, then s_j = qs·k_j (1/√hd is exact for a power-of-4 hd).
  float fixed_q[HD > 0 ? HD : 1], fixed_o[HD > 0 ? HD : 1];
  float* qs = HD > 0 ? fixed_q : scratch;
  float* acc = HD > 0 ? fixed_o : scratch + n;
  for (index_t e = 0; e < n; ++e) qs[e] = qr[e] * scale;
  float mx = -std::numeric_limits<float>::infinity();
  for (index_t j = 0; j < keys; ++j) {
    s[j] = dot<HD>(qs, K + j * stride, n);
    mx = std::max(mx, s[j]);
  }
  double sum = 0;
  for (index_t j = 0; j < keys; ++j) {
    s[j] = std::exp(s[j] - mx);
    sum += s[j];
  }
  const float inv = static_cast<float>(1.0 / sum);
  if constexpr (HD > 0 && HD % kFloatLanes == 0) {
    // o's HD floats in HD / lanes vector registers for the whole sum.
    constexpr index_t kVecs = HD / kFloatLanes;
    fbatch ov[kVecs];
    for (auto& v : ov) v = fbatch(0.0f);
    for (index_t j = 0; j < keys; ++j) {
      const fbatch p(s[j] * inv);
      const float* vr = V + j * stride;
      for (index_t v = 0; v < kVecs; ++v) ov[v] = xsimd::fma(p, fbatch::load_unaligned(vr + v * kFloatLanes), ov[v]);
    }
    for (index_t v = 0; v < kVecs; ++v) ov[v].store_unaligned(o + v * kFloatLanes);
    return;
  }
  std::fill_n(acc, n, 0.0f);
  for (index_t j = 0; j < keys; ++j) {
    const float p = s[j] * inv;
    const float* vr = V + j * stride;
    for (index_t e = 0; e < n; ++e) acc[e] = std::fma(p, vr[e], acc[e]);
  }
  std::copy_n(acc, n, o);
}

template <class Body>
void for_rows(index_t rows, thread_pool& pool, const Body& body) {
  engine::detail::for_row_chunks(rows, pool, body, kRowChunk);
}

/// y[r] = x[r] / sqrt(mean(x[r]²) + ε) · g, the mean in double.
void rms_norm(const float* x, index_t rows, index_t d, const std::vector<float>& g, float eps, float* y,
              thread_pool& pool) {
  for_rows(rows, pool, [&](index_t r0, index_t n) {
    for (index_t r = r0; r < r0 + n; ++r) {
      const float* xr = x + r * d;
      double ss = 0;
      for (index_t i = 0; i < d; ++i) ss = std::fma(double(xr[i]), double(xr[i]), ss);
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / double(d) + double(eps)));
      float* yr = y + r * d;
      for (index_t i = 0; i < d; ++i) yr[i] = g[static_cast<std::size_t>(i)] * (xr[i] * inv);
    }
  });
}

std::int64_t get_count(const lqer::io::gguf_metadata& m, const std::string& key) {
  const auto v = m.get<std::int64_t>(key);
  if (v <= 0 || v > (std::int64_t{1} << 31))
    throw lqer::value_error("metadata key '" + key + "' = " + std::to_string(v) + " is not a plausible count");
  return v;
}

}  // namespace

// ---------------------------------------------------------------------------
// Configuration and names

config config::from_gguf(const lqer::io::gguf_file& f) {
  const auto& m = f.metadata();
  const std::string where = f.name() + ": ";
  try {
    const auto arch = m.get<std::string>("general.architecture");
    if (arch != "llama") throw lqer::value_error("general.architecture is '" + arch + "', not 'llama'");
    config c;
    c.n_layers = get_count(m, "llama.block_count");
    c.d_model = get_count(m, "llama.embedding_length");
    c.d_ffn = get_count(m, "llama.feed_forward_length");
    c.n_heads = get_count(m, "llama.attention.head_count");
    c.n_kv_heads =
        m.contains("llama.attention.head_count_kv") ? get_count(m, "llama.attention.head_count_kv") : c.n_heads;
    c.context_length = get_count(m, "llama.context_length");
    c.rope_base = m.get_or<double>("llama.rope.freq_base", 10000.0);
    c.rms_eps = m.get<float>("llama.attention.layer_norm_rms_epsilon");
    const auto& emb = f.tensor("token_embd.weight");
    if (emb.n_dims != 2 || emb.row_length() != c.d_model)
      throw lqer::value_error("token_embd.weight is " + emb.describe() + ", not [vocab, " + std::to_string(c.d_model) +
                              "]");
    c.vocab = emb.rows();
    c.derive_and_check();
    if (m.contains("llama.rope.dimension_count") && get_count(m, "llama.rope.dimension_count") != c.head_dim)
      throw lqer::value_error("llama.rope.dimension_count differs from the head dimension " +
                              std::to_string(c.head_dim) + " (partial rotary is not supported)");
    return c;
  } catch (const lqer::value_error& e) {
    throw lqer::value_error(where + e.what());
  }
}

void config::derive_and_check() {
  for (const index_t v : {n_layers, d_model, d_ffn, n_heads, n_kv_heads, vocab, context_length})
    if (v <= 0 || v > (index_t{1} << 24)) throw lqer::value_error("a count is outside [1, 2^24]");
  if (d_model % n_heads != 0 || n_heads % n_kv_heads != 0)
    throw lqer::value_error("embedding_length " + std::to_string(d_model) + ", head_count " + std::to_string(n_heads) +
                            " and head_count_kv " + std::to_string(n_kv_heads) + " do not divide");
  head_dim = d_model / n_heads;
  if (head_dim % 2 != 0) throw lqer::value_error("head dimension " + std::to_string(head_dim) + " is odd");
  if (!(rope_base > 1) || !std::isfinite(rope_base) || !(rms_eps >= 0) || !std::isfinite(rms_eps))
    throw lqer::value_error("rope.freq_base or layer_norm_rms_epsilon out of range");
}

const char* gguf_name(linear_kind k) noexcept {
  switch (k) {
    case linear_kind::q: return "attn_q";
    case linear_kind::k: return "attn_k";
    case linear_kind::v: return "attn_v";
    case linear_kind::o: return "attn_output";
    case linear_kind::gate: return "ffn_gate";
    case linear_kind::up: return "ffn_up";
    case linear_kind::down: return "ffn_down";
  }
  return "?";
}

std::string linear_name(int index) {
  return "blk." + std::to_string(index / kLinearsPerBlock) + "." +
         gguf_name(static_cast<linear_kind>(index % kLinearsPerBlock));
}

// ---------------------------------------------------------------------------
// Weights

model_weights model_weights::load(const std::filesystem::path& path, thread_pool& pool) {
  return from_gguf(lqer::io::gguf_file::open(path), pool);
}

model_weights model_weights::from_gguf(const lqer::io::gguf_file& f, thread_pool& pool) {
  model_weights w;
  w.cfg = config::from_gguf(f);
  const config& c = w.cfg;
  w.blocks.resize(static_cast<std::size_t>(c.n_layers));
  w.linears.resize(static_cast<std::size_t>(c.n_layers * kLinearsPerBlock));

  // Every tensor to decode, with its expected [rows, row length] and where it goes.
  struct job {
    std::string name;
    index_t rows, cols;
    std::vector<float>* dst;
  };
  std::vector<job> jobs;
  const index_t d = c.d_model;
  for (index_t b = 0; b < c.n_layers; ++b) {
    const std::string p = "blk." + std::to_string(b) + ".";
    auto& blk = w.blocks[static_cast<std::size_t>(b)];
    jobs.push_back({p + "attn_norm.weight", 1, d, &blk.attn_norm});
    jobs.push_back({p + "ffn_norm.weight", 1, d, &blk.ffn_norm});
    const index_t outs[kLinearsPerBlock] = {c.q_dim(), c.kv_dim(), c.kv_dim(), d, c.d_ffn, c.d_ffn, d};
    const index_t ins[kLinearsPerBlock] = {d, d, d, c.q_dim(), d, d, c.d_ffn};
    for (int k = 0; k < kLinearsPerBlock; ++k) {
      auto& lin = w.linears[static_cast<std::size_t>(linear_index(b, static_cast<linear_kind>(k)))];
      lin.in = ins[k];
      lin.out = outs[k];
      lin.layout = engine::weight_layout::out_in;
      jobs.push_back({p + gguf_name(static_cast<linear_kind>(k)) + ".weight", outs[k], ins[k], &lin.w});
    }
  }
  jobs.push_back({"output_norm.weight", 1, d, &w.output_norm});
  w.tied_output = f.find_tensor("output.weight") == nullptr;
  w.output.in = d;
  w.output.out = c.vocab;
  w.output.layout = engine::weight_layout::out_in;
  jobs.push_back({"token_embd.weight", c.vocab, d, w.tied_output ? &w.output.w : &w.token_embd});
  if (!w.tied_output) jobs.push_back({"output.weight", c.vocab, d, &w.output.w});

  // Check every shape before decoding anything.
  std::vector<const lqer::io::gguf_tensor*> tensors;
  for (const job& j : jobs) {
    const auto& t = f.tensor(j.name);
    const bool vec = j.rows == 1 && t.n_dims == 1;
    if (!(vec || t.n_dims == 2) || t.row_length() != j.cols || t.rows() != j.rows)
      throw lqer::value_error(f.name() + ": tensor " + t.describe() + " should be " + std::to_string(j.rows) + " x " +
                              std::to_string(j.cols) + " (from the llama.* metadata)");
    tensors.push_back(&t);
  }
  pool.parallel_for(static_cast<index_t>(jobs.size()), [&](index_t i0, index_t i1) {
    for (index_t i = i0; i < i1; ++i) *jobs[static_cast<std::size_t>(i)].dst = lqer::io::dequantize(*tensors[i]);
  });
  return w;
}

// ---------------------------------------------------------------------------
// KV cache, log-likelihood

kv_cache::kv_cache(const config& cfg, index_t capacity) : capacity_(capacity), kv_dim_(cfg.kv_dim()) {
  if (capacity <= 0) throw lqer::value_error("kv_cache: capacity " + std::to_string(capacity) + " is not positive");
  k_.assign(static_cast<std::size_t>(cfg.n_layers), std::vector<float>(static_cast<std::size_t>(capacity * kv_dim_)));
  v_ = k_;
}

double log_likelihood::perplexity() const noexcept {
  return predicted ? std::exp(nll_sum / double(predicted)) : std::numeric_limits<double>::quiet_NaN();
}

double negative_log_prob(std::span<const float> logits, std::int32_t target) {
  const float mx = *std::max_element(logits.begin(), logits.end());
  double s = 0;
  for (const float l : logits) s += std::exp(double(l) - double(mx));
  return double(mx) + std::log(s) - double(logits[static_cast<std::size_t>(target)]);
}

// ---------------------------------------------------------------------------
// The model

model::model(std::shared_ptr<const model_weights> w) : w_(std::move(w)) {
  linears_.reserve(w_->linears.size());
  for (const dense_weights& d : w_->linears) linears_.push_back(std::make_unique<engine::fp32_linear>(w_, d));
  output_ = std::make_unique<engine::fp32_linear>(w_, w_->output);
  init_rope();
}

model::model(std::shared_ptr<const model_weights> w, std::vector<std::unique_ptr<const linear_op>> linears,
             std::unique_ptr<const linear_op> output)
    : w_(std::move(w)), linears_(std::move(linears)) {
  const config& c = w_->cfg;
  if (static_cast<index_t>(linears_.size()) != c.n_layers * kLinearsPerBlock)
    throw lqer::shape_error("model: " + std::to_string(linears_.size()) + " linear layers for " +
                            std::to_string(c.n_layers) + " blocks of " + std::to_string(kLinearsPerBlock));
  for (index_t b = 0; b < c.n_layers; ++b) {
    const index_t outs[kLinearsPerBlock] = {c.q_dim(), c.kv_dim(), c.kv_dim(), c.d_model, c.d_ffn, c.d_ffn, c.d_model};
    const index_t ins[kLinearsPerBlock] = {c.d_model, c.d_model, c.d_model, c.q_dim(), c.d_model, c.d_model, c.d_ffn};
    for (int k = 0; k < kLinearsPerBlock; ++k) {
      const auto& op = linears_[static_cast<std::size_t>(linear_index(b, static_cast<linear_kind>(k)))];
      if (!op || op->in_features() != ins[k] || op->out_features() != outs[k])
        throw lqer::shape_error("model: layer " + linear_name(linear_index(b, static_cast<linear_kind>(k))) +
                                " should be " + std::to_string(ins[k]) + " -> " + std::to_string(outs[k]));
    }
  }
  output_ = output ? std::move(output) : std::make_unique<engine::fp32_linear>(w_, w_->output);
  if (output_->in_features() != c.d_model || output_->out_features() != c.vocab)
    throw lqer::shape_error("model: the output projection should be " + std::to_string(c.d_model) + " -> " +
                            std::to_string(c.vocab));
  init_rope();
}

void model::init_rope() {
  const config& c = w_->cfg;
  // Angle of pair j: pos · base^(−2j/hd). transformers computes this in
  // float32 (its rounding of pos·inv_freq is up to an ulp of the angle, 1e-5
  // rad at pos 100); here in double, so the only rounding is of cos and sin.
  rope_inv_freq_.resize(static_cast<std::size_t>(c.head_dim / 2));
  for (index_t j = 0; j < c.head_dim / 2; ++j)
    rope_inv_freq_[static_cast<std::size_t>(j)] = std::pow(c.rope_base, -2.0 * double(j) / double(c.head_dim));
}

void model::set_linear(int index, std::unique_ptr<const linear_op> op) {
  const linear_op& old = linear(index);
  if (!op || op->in_features() != old.in_features() || op->out_features() != old.out_features())
    throw lqer::shape_error("set_linear: layer " + linear_name(index) + " is " + std::to_string(old.in_features()) +
                            " -> " + std::to_string(old.out_features()));
  linears_[static_cast<std::size_t>(index)] = std::move(op);
}

void model::set_output(std::unique_ptr<const linear_op> op) {
  if (!op || op->in_features() != output_->in_features() || op->out_features() != output_->out_features())
    throw lqer::shape_error("set_output: the output projection is " + std::to_string(output_->in_features()) + " -> " +
                            std::to_string(output_->out_features()));
  output_ = std::move(op);
}

std::size_t model::linear_bytes() const noexcept {
  std::size_t s = 0;
  for (const auto& l : linears_) s += l->storage_bytes();
  return s;
}

std::vector<float> model::forward(std::span<const std::int32_t> tokens, kv_cache& cache, thread_pool& pool,
                                  bool last_only, const linear_observer* observer) const {
  const config& c = w_->cfg;
  const index_t T = static_cast<index_t>(tokens.size());
  if (T == 0) return {};
  const index_t p0 = cache.size_;
  if (cache.kv_dim_ != c.kv_dim() || cache.k_.size() != static_cast<std::size_t>(c.n_layers))
    throw lqer::shape_error("forward: the KV cache was made for another configuration");
  if (T > cache.capacity_ - p0)
    throw lqer::value_error("forward: " + std::to_string(p0) + " cached + " + std::to_string(T) +
                            " new tokens exceed the KV cache's capacity " + std::to_string(cache.capacity_));
  for (index_t t = 0; t < T; ++t)
    if (tokens[t] < 0 || tokens[t] >= c.vocab)
      throw lqer::value_error("forward: token id " + std::to_string(tokens[t]) + " at " + std::to_string(t) +
                              " is outside the vocabulary [0, " + std::to_string(c.vocab) + ")");

  const index_t d = c.d_model, qd = c.q_dim(), kvd = c.kv_dim(), hd = c.head_dim, F = c.d_ffn;
  const auto sz = [](index_t n) { return static_cast<std::size_t>(n); };
  std::vector<float> x(sz(T * d)), h(sz(T * d)), q(sz(T * qd)), att(sz(T * qd)), tmp(sz(T * d)), g(sz(T * F)),
      u(sz(T * F)), kn(sz(T * kvd)), vn(sz(T * kvd));  // kn, vn: this chunk's keys and values, position-major
  const index_t cap = cache.capacity_;
  for (index_t t = 0; t < T; ++t) w_->embedding_into(tokens[t], x.data() + t * d);

  const auto run = [&](int index, const float* in, index_t in_cols, float* out, index_t out_cols, index_t out_stride) {
    const cview xin(in, T, in_cols, in_cols);
    if (observer) (*observer)(index, xin);
    linears_[sz(index)]->forward(xin, mview(out, T, out_cols, out_stride), pool);
  };
  // Linears that read the same input (q, k, v; gate, up). At a handful of
  // rows each is a GEMV of a few µs whose tiles would be one parallel_for
  // round trip apiece: then the layers themselves are the tasks, each run
  // whole by one thread (a linear's result does not depend on its executor,
  // and its nested parallel_for runs inline), which also runs their serial
  // parts (quantizing x, the correction's x·A) side by side. Larger T keeps
  // one layer at a time, split into its own tiles.
  struct same_input {
    int index;
    float* out;
    index_t cols;
  };
  const auto run_same_input = [&](const float* in, index_t in_cols, std::initializer_list<same_input> layers) {
    const cview xin(in, T, in_cols, in_cols);
    if (observer)
      for (const same_input& l : layers) (*observer)(l.index, xin);
    const auto one = [&](const same_input& l) {
      linears_[sz(l.index)]->forward(xin, mview(l.out, T, l.cols, l.cols), pool);
    };
    if (T > kLayerTaskRows) {
      for (const same_input& l : layers) one(l);
      return;
    }
    pool.parallel_for(static_cast<index_t>(layers.size()), [&](index_t i0, index_t i1) {
      for (index_t i = i0; i < i1; ++i) one(layers.begin()[i]);
    });
  };
  const auto add_into_x = [&] {
    for_rows(T, pool, [&](index_t r0, index_t n) {
      for (index_t i = r0 * d; i < (r0 + n) * d; ++i) x[sz(i)] += tmp[sz(i)];
    });
  };
  // RoPE's cos and sin per (row, pair), the same for every layer: computed
  // once per forward (the angle and its cos/sin in double, as before, so the
  // values are unchanged), not once per layer.
  std::vector<float> rot(sz(T * hd));  // row t: (cos, sin) of pair j at 2j, 2j + 1
  for_rows(T, pool, [&](index_t r0, index_t n) {
    for (index_t t = r0; t < r0 + n; ++t)
      for (index_t j = 0; j < hd / 2; ++j) {
        const double a = double(p0 + t) * rope_inv_freq_[sz(j)];
        rot[sz(t * hd + 2 * j)] = static_cast<float>(std::cos(a));
        rot[sz(t * hd + 2 * j + 1)] = static_cast<float>(std::sin(a));
      }
  });
  // RoPE on adjacent pairs (2j, 2j + 1) of `heads` heads of row t (see model.hpp).
  const auto rope_row = [&](float* r, index_t t, index_t heads) {
    const float* cs = rot.data() + t * hd;
    for (index_t hh = 0; hh < heads; ++hh)
      for (index_t j = 0; j < hd / 2; ++j) {
        float* e = r + hh * hd + 2 * j;
        const float x0 = e[0], x1 = e[1], c = cs[2 * j], sn = cs[2 * j + 1];
        e[0] = std::fma(x0, c, -(x1 * sn));
        e[1] = std::fma(x0, sn, x1 * c);
      }
  };

  const float scale = static_cast<float>(1.0 / std::sqrt(double(hd)));
  const index_t group = c.n_heads / c.n_kv_heads;
  const index_t q_tiles = (T + kQueryChunk - 1) / kQueryChunk;
  for (index_t b = 0; b < c.n_layers; ++b) {
    const auto& blk = w_->blocks[sz(b)];
    float* K = cache.k_[sz(b)].data();  // head-major: head j's position t at (j·capacity + t)·hd
    float* V = cache.v_[sz(b)].data();
    rms_norm(x.data(), T, d, blk.attn_norm, c.rms_eps, h.data(), pool);
    run_same_input(h.data(), d,
                   {{linear_index(b, linear_kind::q), q.data(), qd},
                    {linear_index(b, linear_kind::k), kn.data(), kvd},
                    {linear_index(b, linear_kind::v), vn.data(), kvd}});
    for_rows(T, pool, [&](index_t r0, index_t n) {
      for (index_t t = r0; t < r0 + n; ++t) {
        rope_row(q.data() + t * qd, t, c.n_heads);
        rope_row(kn.data() + t * kvd, t, c.n_kv_heads);
        for (index_t j = 0; j < c.n_kv_heads; ++j) {  // into the cache, head-major
          const index_t at = (j * cap + p0 + t) * hd;
          std::copy_n(kn.data() + t * kvd + j * hd, hd, K + at);
          std::copy_n(vn.data() + t * kvd + j * hd, hd, V + at);
        }
      }
    });

    // Causal grouped-query attention, one task per (head, tile of query rows).
    pool.parallel_for(c.n_heads * q_tiles, [&](index_t i0, index_t i1) {
      std::vector<float> s(sz(p0 + T + 2 * hd));  // scores, then 2·hd floats of scratch
      for (index_t i = i0; i < i1; ++i) {
        const index_t head = i / q_tiles, t0 = (i % q_tiles) * kQueryChunk;
        const float* Kh = K + (head / group) * cap * hd;
        const float* Vh = V + (head / group) * cap * hd;
        for (index_t t = t0; t < std::min(T, t0 + kQueryChunk); ++t) {
          const float* qr = q.data() + t * qd + head * hd;
          float* o = att.data() + t * qd + head * hd;
          float* scratch = s.data() + p0 + T;
          if (hd == 64)
            attend_row<64>(qr, Kh, Vh, hd, p0 + t + 1, hd, scale, s.data(), scratch, o);
          else
            attend_row<0>(qr, Kh, Vh, hd, p0 + t + 1, hd, scale, s.data(), scratch, o);
        }
      }
    });
    run(linear_index(b, linear_kind::o), att.data(), qd, tmp.data(), d, d);
    add_into_x();

    rms_norm(x.data(), T, d, blk.ffn_norm, c.rms_eps, h.data(), pool);
    run_same_input(
        h.data(), d,
        {{linear_index(b, linear_kind::gate), g.data(), F}, {linear_index(b, linear_kind::up), u.data(), F}});
    for_rows(T, pool, [&](index_t r0, index_t n) {
      for (index_t i = r0 * F; i < (r0 + n) * F; ++i) {
        const float gv = g[sz(i)];
        g[sz(i)] = gv / (1.0f + std::exp(-gv)) * u[sz(i)];  // silu(g) ⊙ u
      }
    });
    run(linear_index(b, linear_kind::down), g.data(), F, tmp.data(), d, d);
    add_into_x();
  }
  cache.size_ = p0 + T;

  const index_t first = last_only ? T - 1 : 0, rows = T - first;
  rms_norm(x.data() + first * d, rows, d, w_->output_norm, c.rms_eps, h.data(), pool);
  std::vector<float> logits(sz(rows * c.vocab));
  output_->forward(cview(h.data(), rows, d, d), mview(logits.data(), rows, c.vocab, c.vocab), pool);
  return logits;
}

std::vector<float> model::logits(std::span<const std::int32_t> tokens, thread_pool& pool, index_t batch,
                                 const linear_observer* observer) const {
  if (batch <= 0) throw lqer::value_error("logits: batch " + std::to_string(batch) + " is not positive");
  const index_t T = static_cast<index_t>(tokens.size());
  std::vector<float> out;
  if (T == 0) return out;
  out.reserve(static_cast<std::size_t>(T * cfg().vocab));
  kv_cache cache(cfg(), T);
  for (index_t t = 0; t < T; t += batch) {
    const auto part =
        forward(tokens.subspan(static_cast<std::size_t>(t), static_cast<std::size_t>(std::min(batch, T - t))), cache,
                pool, false, observer);
    out.insert(out.end(), part.begin(), part.end());
  }
  return out;
}

log_likelihood model::evaluate(std::span<const std::int32_t> tokens, index_t ctx, thread_pool& pool,
                               std::optional<index_t> first, index_t batch, const linear_observer* observer) const {
  if (ctx < 2) throw lqer::value_error("evaluate: context " + std::to_string(ctx) + " is below 2 tokens");
  const index_t from = first.value_or(ctx / 2);
  if (from < 0 || from >= ctx - 1)
    throw lqer::value_error("evaluate: first scored position " + std::to_string(from) + " is outside [0, " +
                            std::to_string(ctx - 1) + ")");
  const index_t V = cfg().vocab;
  log_likelihood r;
  const index_t windows = static_cast<index_t>(tokens.size()) / ctx;
  for (index_t wi = 0; wi < windows; ++wi) {
    const auto win = tokens.subspan(static_cast<std::size_t>(wi * ctx), static_cast<std::size_t>(ctx));
    const std::vector<float> l = logits(win, pool, batch, observer);
    for (index_t j = from; j < ctx - 1; ++j) {
      r.nll_sum += negative_log_prob(std::span<const float>(l.data() + j * V, static_cast<std::size_t>(V)),
                                     win[static_cast<std::size_t>(j + 1)]);
      ++r.predicted;
    }
  }
  return r;
}

std::vector<std::int32_t> model::generate(std::span<const std::int32_t> prompt, index_t n, thread_pool& pool,
                                          std::optional<std::int32_t> stop) const {
  std::vector<std::int32_t> out;
  if (prompt.empty()) throw lqer::value_error("generate: the prompt is empty");
  if (n <= 0) return out;
  kv_cache cache(cfg(), static_cast<index_t>(prompt.size()) + n);
  std::vector<float> l = forward(prompt, cache, pool, true);
  for (index_t i = 0; i < n; ++i) {
    const auto best = static_cast<std::int32_t>(std::max_element(l.begin(), l.end()) - l.begin());
    out.push_back(best);
    if ((stop && best == *stop) || i + 1 == n) break;
    l = forward(std::span<const std::int32_t>(&out.back(), 1), cache, pool, true);
  }
  return out;
}

}  // namespace llama
