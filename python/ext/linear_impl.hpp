// lqer Python package — Linear for one block length (included by
// linear_b16.cpp and linear_b32.cpp, which instantiate it).
#pragma once

#include <lqer/layer/reference_forward.hpp>
#include <lqer/kernel/linear.hpp>
#include <lqer/kernel/pack.hpp>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>

#include "common.hpp"

namespace lqer::py {

/// The layer (kept alive) and, for the kernel, its packed form: packing once
/// here, every call reads the same immutable stream (safe from any thread).
template <class W, class Lr, class Act>
class linear_impl final : public linear_base {
 public:
  linear_impl(std::shared_ptr<const layer_base> keep, const lqer_layer<W, Lr>& layer, linear_mode mode)
      : keep_(std::move(keep)), layer_(layer), mode_(mode) {
    if (mode_ == linear_mode::kernel) packed_.emplace(pack<Act>(layer_));
  }
  index_t in_features() const override { return layer_.in_features(); }
  index_t out_features() const override { return layer_.out_features(); }
  std::string activation_format() const override { return Act::name(); }
  void forward(matrix_view<const float> x, matrix_view<float> y) const override {
    if (packed_) {
      linear(*packed_, x, y, pool());
      return;
    }
    reference_forward<Act>(layer_, x, y,
                           mode_ == linear_mode::reference_paper ? correction_mode::paper : correction_mode::fused);
  }

 private:
  std::shared_ptr<const layer_base> keep_;
  const lqer_layer<W, Lr>& layer_;
  linear_mode mode_;
  std::optional<packed_layer<W, Lr, Act>> packed_;
};

template <int Block>
std::shared_ptr<linear_base> make_linear_block(const std::shared_ptr<const layer_base>& layer,
                                               const std::string& act_format, linear_mode mode) {
  if (layer->block() != Block) return nullptr;
  const cli::mx_spec w = spec_from_stored_name(layer->weight_format(), "Linear");
  const cli::mx_spec lr = spec_from_stored_name(layer->lowrank_format(), "Linear");
  std::shared_ptr<linear_base> out;
  with_layer_formats<Block>(w, lr, [&]<class WF, class LF>(std::type_identity<WF>, std::type_identity<LF>) {
    const auto* impl = dynamic_cast<const layer_impl<WF, LF>*>(layer.get());
    if (!impl) return;
    cli::mx_spec act = w;  // the weight's block and rule (MX activations)
    act.format = act_format;
    try {
      with_activation_format<Block, WF, LF>(act, [&]<class AF>(std::type_identity<AF>) {
        out = std::make_shared<linear_impl<WF, LF, AF>>(layer, impl->layer, mode);
      });
    } catch (const cli::usage_error& e) {
      throw value_error("Linear: act_format: " + std::string(e.what()) + " (" + layer->weight_format() +
                        " weights; MX activations take the weight's block and rule)");
    }
  });
  return out;
}

}  // namespace lqer::py
