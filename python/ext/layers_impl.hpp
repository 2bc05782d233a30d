// lqer Python package — factorize and load for one block length (included by
// layers_b16.cpp and layers_b32.cpp, which instantiate it).
#pragma once

#include <memory>
#include <string>
#include <type_traits>

#include "common.hpp"
#include "factorize_choice.hpp"

namespace lqer::py {

template <int Block>
std::shared_ptr<layer_base> factorize_block(matrix_view<const float> w, const activation_stats& stats,
                                            const factorize_args& args) {
  std::shared_ptr<layer_base> out;
  cli::any_solver solver;
  solver.exact = args.solver == "exact";
  solver.randomized.oversampling = args.oversampling;
  solver.randomized.power_iterations = args.power_iterations;
  const auto factorization =
      args.whiten_factorization == "eigen" ? whiten_factorization::eigen : whiten_factorization::cholesky;
  with_layer_formats<Block>(
      args.w, args.lr, [&]<class WF, class LF>(std::type_identity<WF>, std::type_identity<LF>) {
      cli::with_policy(args.policy, solver, args.damping, factorization, args.bias, {}, [&](const auto& opt) {
        using opt_t = std::decay_t<decltype(opt)>;
        auto r = factorize<decltype(opt_t::policy), decltype(opt_t::solver), WF, LF>(w, stats, args.rank, opt);
        r.report.policy = args.policy;
        r.report.solver = args.solver;
        auto impl = std::make_shared<layer_impl<WF, LF>>(std::move(r.layer));
        impl->report = std::move(r.report);
        impl->scale = std::move(r.scale);
        impl->info = io::layer_info{args.policy, args.solver};
        out = std::move(impl);
      });
      });
  return out;
}

template <int Block>
std::shared_ptr<layer_base> load_block(const io::checkpoint_file& f, const io::checkpoint_layer& info) {
  const std::string where = f.name() + ": layer '" + info.name + "'";
  const cli::mx_spec w = spec_from_stored_name(info.weight_format, where);
  const cli::mx_spec lr = spec_from_stored_name(info.lowrank_format, where);
  if (w.block != Block) return nullptr;
  std::shared_ptr<layer_base> out;
  with_layer_formats<Block>(w, lr, [&]<class WF, class LF>(std::type_identity<WF>, std::type_identity<LF>) {
    auto impl = std::make_shared<layer_impl<WF, LF>>(load<WF, LF>(f, info.name));
    impl->info = io::layer_info{info.policy, info.solver};
    out = std::move(impl);
  });
  return out;
}

}  // namespace lqer::py
