// lqer::offline — step 3 of factorize() (the truncated SVD of the weighted
// error: Eigen's BDCSVD, QR and Jacobi SVD, the thin products with Eq) for
// every solver in LQER_OFFLINE_SOLVERS.
#include "lqer/factorize/factorize.hpp"

namespace lqer {
LQER_OFFLINE_SOLVERS(LQER_OFFLINE_SOLVE_LOWRANK)
}  // namespace lqer
