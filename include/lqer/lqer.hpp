// lqer — the whole public API. Include this one header.
#pragma once

#include "lqer/config.hpp"
#include "lqer/error.hpp"
#include "lqer/exec/executor.hpp"
#include "lqer/exec/thread_pool.hpp"
#include "lqer/format/e8m0.hpp"
#include "lqer/format/format.hpp"
#include "lqer/format/fp16.hpp"
#include "lqer/format/ggml_blocks.hpp"
#include "lqer/format/intq.hpp"
#include "lqer/format/mxint.hpp"
#include "lqer/format/rounding.hpp"
#if defined(_OPENMP)
#include "lqer/exec/openmp.hpp"  // openmp_executor needs -fopenmp
#endif
#include "lqer/kernel/dispatch.hpp"
#include "lqer/kernel/linear.hpp"
#include "lqer/kernel/pack.hpp"
#include "lqer/tensor/eigen.hpp"
#include "lqer/tensor/quantized_matrix.hpp"
#include "lqer/tensor/view.hpp"
