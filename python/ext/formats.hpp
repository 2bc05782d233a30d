// lqer Python package — fake quantization in every format the lqer program
// knows (the format table, lqer/format/table.hpp).
#pragma once

#include <nanobind/nanobind.h>

namespace lqer::py {
void bind_formats(nanobind::module_& m);
}
