// lqer Python package — fake quantization in every format the lqer program
// knows (tools/lqer/format_select.hpp's list).
#pragma once

#include <nanobind/nanobind.h>

namespace lqer::py {
void bind_formats(nanobind::module_& m);
}
