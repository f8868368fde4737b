// The AVX-512 VNNI MatMul kernels (matmul_x86.inc compiled with AVX2, FMA, F16C, AVX-512
// F/BW/DQ/VL and AVX512-VNNI): the Q8_0-family dot products use 512-bit vpdpbusd.
//
// GCC 12's AVX-512 headers build 512-bit values from _mm512_undefined_*() and then warn that
// the undefined half "may be used uninitialized" (GCC bug 105593); it is not.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#define FERRY_MATMUL_AVX512 1
#include "kernels/cpu/matmul_x86.inc"
#pragma GCC diagnostic pop
