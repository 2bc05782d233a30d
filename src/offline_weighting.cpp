// lqer::offline — step 1 of factorize() (the policies' weighting: the
// whitening Cholesky and eigensolver) for every policy in LQER_OFFLINE_POLICIES.
#include "lqer/factorize/factorize.hpp"

namespace lqer {
LQER_OFFLINE_POLICIES(LQER_OFFLINE_WEIGHTING)
}  // namespace lqer
