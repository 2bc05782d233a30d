// lqer::offline — step 5 of factorize(): the report's residuals (the Gram
// basis's double-precision products).
#include "lqer/factorize/factorize.hpp"

namespace lqer {
LQER_OFFLINE_RESIDUALS
}  // namespace lqer
