// lqer::kernels — linear() for the W4A8 layer types of LQER_KERNELS_LAYERS
// (every kernel path: the x86 ones by target attributes, chosen at run time).
#include "lqer/kernel/linear.hpp"

namespace lqer {
LQER_KERNELS_LAYERS_W4(LQER_KERNELS_LINEAR)
}  // namespace lqer
