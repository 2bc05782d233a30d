// use_lite — the model's weights and the forward pass (see model.hpp).
#include "model.hpp"

#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

namespace use_lite {

namespace {

// The graph's weight names (USE_LITE.md). A: the graph's apply scope,
// S: its transformer stack, K: the module's variables.
const std::string kA = "module_apply_default/Encoder_en/KonaTransformer/Encode/";
const std::string kS = kA + "TransformerStack/";
const std::string kK = "module/Encoder_en/KonaTransformer/Encode/";

std::string layer_prefix(int l) { return "Layer_" + std::to_string(l) + "/TransformerLayer/"; }

dense_weights read_dense(const tfjs_weights& w, const std::string& kernel, std::initializer_list<std::int64_t> kshape,
                         const std::string& bias, index_t in, index_t out) {
  dense_weights d;
  d.in = in;
  d.out = out;
  d.w = w.floats(kernel, kshape);  // a 1×1 conv kernel [1, 1, in, out] is the same bytes as [in, out]
  d.b = w.floats(bias, {out});
  return d;
}

float read_scalar(const tfjs_weights& w, const std::string& name) { return w.floats(name, {}).front(); }

using rm_matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// y = (v − μ)·rsqrt(mean((v − μ)²) + 1e-6)·g + b over each row (sums in double).
void layer_norm(lqer::matrix_view<const float> x, const std::vector<float>& g, const std::vector<float>& b,
                lqer::matrix_view<float> y, thread_pool& pool) {
  constexpr double kEpsilon = 1e-6;  // the graph's layer_norm/Cast/x
  const index_t n = x.cols;
  detail::for_row_chunks(x.rows, pool, [&](index_t r0, index_t rows) {
    for (index_t r = r0; r < r0 + rows; ++r) {
      const float* v = x.row(r);
      double mean = 0;
      for (index_t i = 0; i < n; ++i) mean += v[i];
      mean /= static_cast<double>(n);
      double var = 0;
      for (index_t i = 0; i < n; ++i) var += (v[i] - mean) * (v[i] - mean);
      var /= static_cast<double>(n);
      const double inv = 1.0 / std::sqrt(var + kEpsilon);
      float* out = y.row(r);
      for (index_t i = 0; i < n; ++i) out[i] = static_cast<float>((v[i] - mean) * inv) * g[i] + b[i];
    }
  });
}

}  // namespace

// ---------------------------------------------------------------------------
// Weights

model_weights model_weights::from_tfjs(const tfjs_weights& w) {
  model_weights m;
  m.embeddings = w.floats("module/Embeddings_en", {kVocab, kEmbedDim});
  m.timing_inv = w.floats(kS + "Layer_0/AddTimingSignal/TimingSignal/ExpandDims_1", {1, kTimingDim});
  m.l2_epsilon = read_scalar(w, "module_apply_default/Encoder_en/hidden_layers/l2_normalize/Maximum/y");

  for (int l = 0; l < 2; ++l) {
    layer& L = m.layers[static_cast<std::size_t>(l)];
    const std::string p = layer_prefix(l);
    L.d = l == 0 ? kEmbedDim : kHiddenDim;
    L.head_dim = L.d / kHeads;
    L.q_scale = read_scalar(w, kS + p + "MultiheadAttention/mul/y");
    const std::string ln = "layer_prepostprocess/layer_norm/layer_norm_";
    L.ln1_g = w.floats(kA + p + ln + "scale/ConcatPartitions/concat", {L.d});
    L.ln1_b = w.floats(kA + p + ln + "bias/ConcatPartitions/concat", {L.d});
    L.ln2_g = w.floats(kA + p + "FFN/" + ln + "scale/ConcatPartitions/concat", {kHiddenDim});
    L.ln2_b = w.floats(kA + p + "FFN/" + ln + "bias/ConcatPartitions/concat", {kHiddenDim});

    const int base = l == 0 ? static_cast<int>(linear_id::l0_qkv) : static_cast<int>(linear_id::l1_qkv);
    const std::string mha = p + "MultiheadAttention/";
    auto& lin = m.linears;
    lin[base + 0] = read_dense(w, kK + mha + "qkv_transform_single/kernel/part_0", {1, 1, L.d, 3 * L.d},
                               kA + mha + "qkv_transform_single/bias/ConcatPartitions/concat", L.d, 3 * L.d);
    lin[base + 1] = read_dense(w, kK + mha + "output_transform_single/kernel/part_0", {1, 1, L.d, kHiddenDim},
                               kA + mha + "output_transform_single/bias/ConcatPartitions/concat", L.d, kHiddenDim);
    int next = base + 2;
    if (l == 0)
      lin[next++] = read_dense(w, kA + p + "dense/kernel/ConcatPartitions/concat", {kEmbedDim, kHiddenDim},
                               kA + p + "dense/bias/ConcatPartitions/concat", kEmbedDim, kHiddenDim);
    lin[next++] = read_dense(w, kS + p + "FFN/conv1/Tensordot/Reshape_1", {kHiddenDim, kFfnDim},
                             kA + p + "FFN/conv1/bias/ConcatPartitions/concat", kHiddenDim, kFfnDim);
    lin[next++] = read_dense(w, kS + p + "FFN/conv2/Tensordot/Reshape_1", {kFfnDim, kHiddenDim},
                             kA + p + "FFN/conv2/bias/ConcatPartitions/concat", kFfnDim, kHiddenDim);
  }
  m.linears[static_cast<int>(linear_id::tanh)] =
      read_dense(w, "module/Encoder_en/hidden_layers/tanh_layer_0/weights", {kHiddenDim, kHiddenDim},
                 "module/Encoder_en/hidden_layers/tanh_layer_0/bias", kHiddenDim, kHiddenDim);
  return m;
}

std::size_t model_weights::other_bytes() const noexcept {
  std::size_t n = embeddings.size() + timing_inv.size() + 1;
  for (const layer& L : layers) n += L.ln1_g.size() + L.ln1_b.size() + L.ln2_g.size() + L.ln2_b.size() + 1;
  return n * sizeof(float);
}

linear_set make_fp32_linears(std::shared_ptr<const model_weights> w) {
  linear_set set;
  for (int i = 0; i < kNumLinears; ++i) set[i] = std::make_unique<fp32_linear>(w, w->linears[i]);
  return set;
}

// ---------------------------------------------------------------------------
// Encoder

encoder::encoder(std::shared_ptr<const model_weights> w, linear_set linears)
    : w_(std::move(w)), linears_(std::move(linears)) {
  for (int i = 0; i < kNumLinears; ++i) {
    if (!linears_[i]) throw lqer::value_error(std::string("encoder: no implementation for ") + linear_name(i));
    const dense_weights& d = w_->linears[i];
    if (linears_[i]->in_features() != d.in || linears_[i]->out_features() != d.out)
      throw lqer::shape_error(std::string("encoder: ") + linear_name(i) + " is " +
                              std::to_string(linears_[i]->in_features()) + " -> " +
                              std::to_string(linears_[i]->out_features()) + ", the model needs " +
                              std::to_string(d.in) + " -> " + std::to_string(d.out));
  }
}

std::size_t encoder::linear_bytes() const noexcept {
  std::size_t n = 0;
  for (const auto& l : linears_) n += l->storage_bytes();
  return n;
}

std::vector<float> encoder::embed(std::span<const std::vector<std::int32_t>> ids, thread_pool& pool,
                                  const linear_observer* observer) const {
  std::vector<float> out(ids.size() * static_cast<std::size_t>(kOutDim));
  if (!ids.empty())
    embed(ids, lqer::matrix_view<float>(out.data(), static_cast<index_t>(ids.size()), kOutDim), pool, observer);
  return out;
}

void encoder::embed(std::span<const std::vector<std::int32_t>> ids, lqer::matrix_view<float> out, thread_pool& pool,
                    const linear_observer* observer) const {
  out.validate("embed: out");
  if (out.rows != static_cast<index_t>(ids.size()) || out.cols != kOutDim)
    throw lqer::shape_error("embed: out is " + std::to_string(out.rows) + "x" + std::to_string(out.cols) + " for " +
                            std::to_string(ids.size()) + " sentences of " + std::to_string(kOutDim));
  for (std::size_t s = 0; s < ids.size(); ++s)
    for (const std::int32_t id : ids[s])
      if (id < 0 || id >= model_weights::kVocab)
        throw lqer::value_error("embed: sentence " + std::to_string(s) + " has token id " + std::to_string(id) +
                                ", outside the embedding table's [0, " + std::to_string(model_weights::kVocab) + ")");
  for (std::size_t s0 = 0; s0 < ids.size(); s0 += kBatch) {
    const std::size_t n = std::min(kBatch, ids.size() - s0);
    embed_batch(
        ids.subspan(s0, n),
        lqer::matrix_view<float>(out.row(static_cast<index_t>(s0)), static_cast<index_t>(n), kOutDim, out.row_stride),
        pool, observer);
  }
}

void encoder::embed_batch(std::span<const std::vector<std::int32_t>> ids, lqer::matrix_view<float> out,
                          thread_pool& pool, const linear_observer* observer) const {
  const model_weights& W = *w_;
  const index_t n_sent = static_cast<index_t>(ids.size());
  // Row offsets of each sentence in the stacked [T, d] activations.
  std::vector<index_t> begin(ids.size() + 1, 0);
  for (std::size_t s = 0; s < ids.size(); ++s)
    begin[s + 1] = begin[s] + std::min(static_cast<index_t>(ids[s].size()), kMaxTokens);
  const index_t T = begin.back();

  auto view = [](std::vector<float>& v, index_t rows, index_t cols) {
    v.resize(static_cast<std::size_t>(rows * cols));
    return lqer::matrix_view<float>(v.data(), rows, cols);
  };
  auto run = [&](linear_id id, lqer::matrix_view<const float> x, lqer::matrix_view<float> y) {
    if (observer) (*observer)(id, x);
    linears_[static_cast<int>(id)]->forward(x, y, pool);
  };

  std::vector<float> pooled(static_cast<std::size_t>(n_sent * kOutDim), 0.0f);
  if (T > 0) {
    std::vector<float> xb, hb, qkvb, ob, resb, fb;
    // x = 2·E[id] + [sin(t·inv), cos(t·inv)]. The angle is rounded to float
    // before sin/cos, as the graph computes it (float32 Mul, then Sin/Cos).
    auto x = view(xb, T, model_weights::kEmbedDim);
    for (std::size_t s = 0; s < ids.size(); ++s)
      for (index_t t = 0; t < begin[s + 1] - begin[s]; ++t) {
        float* row = x.row(begin[s] + t);
        const float* e = W.embeddings.data() +
                         static_cast<std::size_t>(ids[s][static_cast<std::size_t>(t)]) * model_weights::kEmbedDim;
        for (index_t k = 0; k < model_weights::kTimingDim; ++k) {
          const float angle = static_cast<float>(t) * W.timing_inv[static_cast<std::size_t>(k)];
          row[k] = 2.0f * e[k] + static_cast<float>(std::sin(static_cast<double>(angle)));
          row[k + model_weights::kTimingDim] =
              2.0f * e[k + model_weights::kTimingDim] + static_cast<float>(std::cos(static_cast<double>(angle)));
        }
      }

    for (int l = 0; l < 2; ++l) {
      const model_weights::layer& L = W.layers[static_cast<std::size_t>(l)];
      const index_t d = L.d, dh = L.head_dim;
      const auto ids_l =
          l == 0 ? std::array{linear_id::l0_qkv, linear_id::l0_attn_out, linear_id::l0_ffn1, linear_id::l0_ffn2}
                 : std::array{linear_id::l1_qkv, linear_id::l1_attn_out, linear_id::l1_ffn1, linear_id::l1_ffn2};
      auto h = view(hb, T, d);
      layer_norm(x, L.ln1_g, L.ln1_b, h, pool);
      auto qkv = view(qkvb, T, 3 * d);
      run(ids_l[0], h, qkv);

      // Attention, one (sentence, head) per work item: softmax over the
      // sentence's own keys, so no padding and no mask are needed.
      auto o = view(ob, T, d);
      const index_t items = n_sent * model_weights::kHeads;
      pool.parallel_for(items, [&](index_t i0, index_t i1) {
        for (index_t item = i0; item < i1; ++item) {
          const std::size_t s = static_cast<std::size_t>(item / model_weights::kHeads);
          const index_t head = item % model_weights::kHeads;
          const index_t r0 = begin[s], len = begin[s + 1] - begin[s];
          if (len == 0) continue;
          using stride = Eigen::OuterStride<>;
          using cmap = Eigen::Map<const rm_matrix, 0, stride>;
          const cmap q(qkv.row(r0) + head * dh, len, dh, stride(qkv.row_stride));
          const cmap k(qkv.row(r0) + d + head * dh, len, dh, stride(qkv.row_stride));
          const cmap v(qkv.row(r0) + 2 * d + head * dh, len, dh, stride(qkv.row_stride));
          rm_matrix a = (q * L.q_scale) * k.transpose();  // [len, len]
          for (index_t i = 0; i < len; ++i) {
            auto row = a.row(i);
            row = (row.array() - row.maxCoeff()).exp().matrix();
            row /= row.sum();
          }
          Eigen::Map<rm_matrix, 0, stride>(o.row(r0) + head * dh, len, dh, stride(o.row_stride)).noalias() = a * v;
        }
      });

      // x = res + (o·Wo + bo), res = x·Wd + bd on layer 0 (256 → 512), x on layer 1.
      auto attn = view(resb, T, model_weights::kHiddenDim);
      run(ids_l[1], o, attn);
      if (l == 0) {
        std::vector<float> xnb;
        auto xn = view(xnb, T, model_weights::kHiddenDim);
        run(linear_id::l0_dense, x, xn);
        for (std::size_t i = 0; i < xnb.size(); ++i) xnb[i] += resb[i];
        xb.swap(xnb);
        x = lqer::matrix_view<float>(xb.data(), T, model_weights::kHiddenDim);
      } else {
        for (std::size_t i = 0; i < xb.size(); ++i) xb[i] += resb[i];
      }

      // x = x + relu(LN2(x)·W1 + b1)·W2 + b2
      auto h2 = view(hb, T, model_weights::kHiddenDim);
      layer_norm(x, L.ln2_g, L.ln2_b, h2, pool);
      auto f = view(fb, T, model_weights::kFfnDim);
      run(ids_l[2], h2, f);
      for (float& e : fb) e = std::max(e, 0.0f);
      auto f2 = view(resb, T, model_weights::kHiddenDim);
      run(ids_l[3], f, f2);
      for (std::size_t i = 0; i < xb.size(); ++i) xb[i] += resb[i];
    }

    // Mean over each sentence's tokens (no final LayerNorm), summed in double.
    for (index_t s = 0; s < n_sent; ++s) {
      const index_t len = begin[s + 1] - begin[s];
      if (len == 0) continue;  // p = 0 / max(len, 1) = 0
      for (index_t c = 0; c < kOutDim; ++c) {
        double acc = 0;
        for (index_t t = begin[s]; t < begin[s + 1]; ++t) acc += x(t, c);
        pooled[static_cast<std::size_t>(s * kOutDim + c)] = static_cast<float>(acc / static_cast<double>(len));
      }
    }
  }

  // out = normalize(tanh(p·Wt + bt)): x · rsqrt(max(Σx², ε)), as the graph's l2_normalize.
  std::vector<float> tb;
  auto t = view(tb, n_sent, kOutDim);
  run(linear_id::tanh, lqer::matrix_view<const float>(pooled.data(), n_sent, kOutDim), t);
  for (index_t s = 0; s < n_sent; ++s) {
    double ss = 0;
    for (index_t c = 0; c < kOutDim; ++c) {
      t(s, c) = std::tanh(t(s, c));
      ss += static_cast<double>(t(s, c)) * t(s, c);
    }
    const double inv = 1.0 / std::sqrt(std::max(ss, static_cast<double>(W.l2_epsilon)));
    for (index_t c = 0; c < kOutDim; ++c) out(s, c) = static_cast<float>(t(s, c) * inv);
  }
}

}  // namespace use_lite
