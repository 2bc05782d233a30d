// use_lite — the formats of block length 16 (see quantize_impl.hpp for why
// each block length is its own translation unit).
#include "quantize_impl.hpp"

namespace use_lite::detail {
template std::string format_names<16>(const quant_config&);
template void quantize_layers<16>(const model_weights&, const calibration&, const quant_config&, quantized_model&,
                                  thread_pool&, const quantize_progress&);
template std::unique_ptr<const linear_op> load_linear<16>(const lqer::io::checkpoint_file&, const std::string&,
                                                          lqer::correction_mode, bool);
}  // namespace use_lite::detail
