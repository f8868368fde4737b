// Elements per quantization block: the constants tensor/dtype.h and tensor/blocks.h share.
// Included by the CUDA kernels too, so it includes nothing.
//
// Thread-safety: constants.
#ifndef FERRY_TENSOR_BLOCK_SIZES_H_
#define FERRY_TENSOR_BLOCK_SIZES_H_

namespace ferry {

inline constexpr int kQK_K = 256;  // elements in a K-quant super-block

}  // namespace ferry

#endif  // FERRY_TENSOR_BLOCK_SIZES_H_
