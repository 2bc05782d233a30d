// lqer Python package — the fused kernels for block 32 (see common.hpp).
#include "linear_impl.hpp"

namespace lqer::py {
template std::shared_ptr<linear_base> make_linear_block<32>(const std::shared_ptr<const layer_base>&, const std::string&,
                                                                       linear_mode);
}  // namespace lqer::py
