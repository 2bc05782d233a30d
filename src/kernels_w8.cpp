// lqer::kernels — linear() for the W8A8 layer types of LQER_KERNELS_LAYERS.
#include "lqer/kernel/linear.hpp"

namespace lqer {
LQER_KERNELS_LAYERS_W8(LQER_KERNELS_LINEAR)
}  // namespace lqer
