# Warnings and sanitizers for lqer's own programs (tests, tools, benchmarks,
# examples). The library target itself imposes no flags on its users.
add_library(lqer_project_options INTERFACE)
target_compile_options(lqer_project_options INTERFACE -Wall -Wextra)
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU" AND CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
  # GCC 12 warns falsely (-Wuninitialized / -Wmaybe-uninitialized) from its own
  # avx512fintrin.h: the `__m512 __Y = __Y;` idiom behind _mm512_undefined_*,
  # inlined into xsimd 8.1's AVX-512 hadd and Eigen's AVX-512 GEBP packing. The
  # warning lands after inlining, so -isystem cannot silence it. Fixed in GCC 13.
  # Likewise -Wrestrict (GCC bug 105651): `"literal" + std::string&&` inlined
  # from libstdc++ / CLI11 headers at -O2/-O3 warns falsely.
  target_compile_options(lqer_project_options INTERFACE -Wno-uninitialized -Wno-maybe-uninitialized -Wno-restrict)
endif()
if(LQER_WERROR)
  target_compile_options(lqer_project_options INTERFACE -Werror)
endif()
if(LQER_SANITIZE)
  target_compile_options(lqer_project_options INTERFACE -fsanitize=${LQER_SANITIZE} -fno-sanitize-recover=all
                                                        -fno-omit-frame-pointer)
  target_link_options(lqer_project_options INTERFACE -fsanitize=${LQER_SANITIZE} -fno-sanitize-recover=all)
endif()
