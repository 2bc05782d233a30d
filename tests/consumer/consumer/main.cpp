// A program that uses lqer the way an engine does: one include, one target.
// Built by the find_package and add_subdirectory consumer projects; it only
// has to compile, link and give the right answer on a tiny case.
#include <lqer/lqer.hpp>

#include <cstdio>
#include <vector>

int main() {
  // Multiples of 1/4 up to 1.75 are exact in OCP MXINT4 with exponent 0 (two
  // fraction bits, |q| ≤ 7), so fake quantization must return them unchanged.
  std::vector<float> w;
  for (int r = 0; r < 2; ++r)
    for (int k = 0; k < 32; ++k) w.push_back(0.25f * static_cast<float>(k % 15 - 7) * (r ? -1.0f : 1.0f));
  std::vector<float> out(w.size());
  using F = lqer::mxint4_ocp<32>;
  lqer::fake_quantize<F>(lqer::matrix_view<const float>(w.data(), 2, 32), lqer::matrix_view<float>(out.data(), 2, 32));
  if (out != w) {
    std::printf("consumer: fake_quantize changed exactly representable values\n");
    return 1;
  }
  std::printf("consumer: lqer %d.%d.%d, %s ok\n", LQER_VERSION_MAJOR, LQER_VERSION_MINOR, LQER_VERSION_PATCH,
              F::name().c_str());
  return 0;
}
