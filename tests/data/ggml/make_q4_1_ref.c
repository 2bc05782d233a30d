// Writes ggml's Q4_1 reference blocks for lqer's tests (tests/data/ggml/README.md):
// quantize_row_q4_1_ref and dequantize_row_q4_1 of ggml 0.21.0 on ggml_ref_in.f32.
// Build (ggml at d99724f, libggml-base with -O2, GGML_NATIVE=OFF):
//   cc -O2 make_q4_1_ref.c -I<ggml>/include -I<ggml>/src -L<build>/src -lggml-base -o make_q4_1_ref
//   LD_LIBRARY_PATH=<build>/src ./make_q4_1_ref ggml_ref_in.f32
#include <stdio.h>
#include <stdlib.h>
#include "ggml-quants.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  FILE* f = fopen(argv[1], "rb");
  if (!f) return 1;
  static float x[2048], y[2048];
  if (fread(x, 4, 2048, f) != 2048) return 1;
  fclose(f);
  static block_q4_1 q[64];
  quantize_row_q4_1_ref(x, q, 2048);
  dequantize_row_q4_1(q, y, 2048);
  FILE* o = fopen("ggml_ref_q4_1.bin", "wb");
  fwrite(q, sizeof(block_q4_1), 64, o);
  fclose(o);
  o = fopen("ggml_ref_q4_1_deq.f32", "wb");
  fwrite(y, 4, 2048, o);
  fclose(o);
  return sizeof(block_q4_1) == 20 ? 0 : 3;
}
