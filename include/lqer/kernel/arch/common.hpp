// lqer — small macros shared by the architecture headers.
#pragma once

#define LQER_PRAGMA(x) _Pragma(#x)
/// Full unrolling of a loop with a compile-time trip count (GCC and clang both
/// read `#pragma GCC unroll`): keeps arrays of vector registers in registers.
#define LQER_UNROLL(n) LQER_PRAGMA(GCC unroll n)
