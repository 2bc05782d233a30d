// lqer — the runtime API: formats and the format table (names → types),
// quantized matrices, the LQER layer and its reference forward, packing, the
// fused kernels and their dispatch, executors.
// What an inference engine needs, and free of Eigen (lint checks it): the
// offline API — calibration statistics (calib/), factorize and its policies
// and solvers (factorize/), Eigen interop (tensor/eigen.hpp), file I/O (io/) —
// is included by name.
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
#include "lqer/format/table.hpp"
#if defined(_OPENMP)
#include "lqer/exec/openmp.hpp"  // openmp_executor needs -fopenmp
#endif
#include "lqer/kernel/dispatch.hpp"
#include "lqer/kernel/linear.hpp"
#include "lqer/kernel/pack.hpp"
#include "lqer/layer/layer.hpp"
#include "lqer/layer/reference_forward.hpp"
#include "lqer/tensor/quantized_matrix.hpp"
#include "lqer/tensor/view.hpp"
