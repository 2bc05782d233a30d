// lqer CLI (and the Python package) — run-time policy and solver names as the
// types factorize() takes.
//
// The front ends are where run-time names meet compile-time types. Folding
// identity / mean_abs / rms into one diagonal policy type (and the exact and
// randomized solvers into one solver type) keeps the instantiations at
// 2 × (formats) instead of 8 × (formats). Multiplying by a scale of ones is
// exact, so `identity` gives the same numbers either way. A caller sets the
// report's policy and solver names from the user's choice afterwards.
#pragma once

#include <lqer/factorize/factorize.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace lqer::cli {

/// identity, mean_abs or rms, chosen at run time by `kind`.
struct diagonal_policy {
  static constexpr std::string_view kName = "diagonal";
  std::string kind;
  std::vector<float> scale(const activation_stats& s, index_t in) const {
    if (kind == "identity") return policy::identity{}.scale(s, in);
    if (kind == "rms") return policy::rms{}.scale(s, in);
    return policy::mean_abs{}.scale(s, in);
  }
};

/// exact_svd or randomized_svd (with its parameters), chosen at run time.
struct any_solver {
  static constexpr std::string_view kName = "any";
  bool exact = false;
  randomized_svd randomized;
  template <linear_operator Op>
  svd_triplets operator()(const Op& op, index_t k) const {
    return exact ? exact_svd{}(op, k) : randomized(op, k);
  }
};

/// The policy names with_policy accepts.
inline constexpr std::string_view kPolicyNames[] = {"identity", "mean_abs", "rms", "whiten"};

inline bool is_policy_name(std::string_view name) {
  for (const auto n : kPolicyNames)
    if (n == name) return true;
  return false;
}

/// Calls visit(options) with factorize_options<policy::whiten, any_solver>
/// for "whiten" (damping and factorization from the arguments) and with
/// factorize_options<diagonal_policy, any_solver> for the diagonal policies.
/// The caller checks the name first (is_policy_name).
template <class Visit>
void with_policy(const std::string& name, const any_solver& solver, double damping, whiten_factorization factorization,
                 std::vector<float> bias, factorize_progress progress, Visit&& visit) {
  if (name == "whiten") {
    factorize_options<policy::whiten, any_solver> opt;
    opt.policy.damping = damping;
    opt.policy.factorization = factorization;
    opt.solver = solver;
    opt.bias = std::move(bias);
    opt.progress = std::move(progress);
    visit(opt);
  } else {
    factorize_options<diagonal_policy, any_solver> opt;
    opt.policy.kind = name;
    opt.solver = solver;
    opt.bias = std::move(bias);
    opt.progress = std::move(progress);
    visit(opt);
  }
}

}  // namespace lqer::cli
