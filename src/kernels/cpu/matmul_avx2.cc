// The AVX2 + FMA + F16C MatMul kernels (matmul_x86.inc compiled with -mavx2 -mfma -mf16c).
#define FERRY_MATMUL_AVX512 0
#include "kernels/cpu/matmul_x86.inc"
