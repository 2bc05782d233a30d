// lqer Python package — factorize and load for block 16 (see common.hpp).
#include "layers_impl.hpp"

namespace lqer::py {
template std::shared_ptr<layer_base> factorize_block<16>(matrix_view<const float>, const activation_stats&,
                                                         const factorize_args&);
template std::shared_ptr<layer_base> load_block<16>(const io::checkpoint_file&, const io::checkpoint_layer&);
}  // namespace lqer::py
