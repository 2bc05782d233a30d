// lqer — moved to lqer/layer/layer.hpp (the layer rung below both factorize/
// and kernel/); this header stays so that existing includes keep compiling.
#pragma once

#include "lqer/layer/layer.hpp"
