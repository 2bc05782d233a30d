// lqer Python package — factorize and load for block 32 (see common.hpp).
#include "layers_impl.hpp"

namespace lqer::py {
template std::shared_ptr<layer_base> factorize_block<32>(matrix_view<const float>, const activation_stats&,
                                                         const factorize_args&);
template std::shared_ptr<layer_base> load_block<32>(const io::checkpoint_file&, const io::checkpoint_layer&);
}  // namespace lqer::py
