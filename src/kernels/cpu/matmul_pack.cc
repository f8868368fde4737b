// PackWeightRows: the row layout of the Q8_0 family rearranged into MatMul's packed layout
// (matmul.h describes it). Plain C++; runs once per weight at load.
#include <cstring>

#include "kernels/cpu/matmul.h"

namespace ferry {
namespace {

constexpr int64_t kQ = 32;

struct Format {
  uint64_t block_bytes = 0;  // bytes of one row's block (the row layout)
  bool has_min = false;      // m follows d (Q4_1, Q5_1)
  bool has_high = false;     // a fifth bit per element (Q5_0, Q5_1)
  bool bytes = false;        // Q8_0: one signed byte per element
};

bool FormatOf(DType type, Format* f) {
  switch (type) {
    case DType::kQ4_0: *f = {sizeof(BlockQ4_0), false, false, false}; return true;
    case DType::kQ4_1: *f = {sizeof(BlockQ4_1), true, false, false}; return true;
    case DType::kQ5_0: *f = {sizeof(BlockQ5_0), false, true, false}; return true;
    case DType::kQ5_1: *f = {sizeof(BlockQ5_1), true, true, false}; return true;
    case DType::kQ8_0: *f = {sizeof(BlockQ8_0), false, false, true}; return true;
    default: return false;
  }
}

// Packs block b of the kPackRows rows starting at `rows[0]` (each a pointer to its row's
// first block) into out (kPackRows * block_bytes bytes).
void PackBlock(const Format& f, const uint8_t* const* rows, int64_t b, uint8_t* out) {
  uint8_t* p = out;
  // d (and m): the block's first 2 (4) bytes in every layout.
  for (int64_t r = 0; r < kPackRows; ++r) {
    std::memcpy(p + 2 * r, rows[r] + b * f.block_bytes, 2);
  }
  p += 2 * kPackRows;
  if (f.has_min) {
    for (int64_t r = 0; r < kPackRows; ++r) {
      std::memcpy(p + 2 * r, rows[r] + b * f.block_bytes + 2, 2);
    }
    p += 2 * kPackRows;
  }
  const uint64_t head = f.has_min ? 4 : 2;  // d (and m)
  if (f.bytes) {
    for (int64_t r = 0; r < kPackRows; ++r) {
      const uint8_t* qs = rows[r] + b * f.block_bytes + head;
      for (int k = 0; k < 8; ++k) {
        for (int i = 0; i < 4; ++i) p[64 * k + 4 * r + i] = qs[4 * k + i] ^ 0x80;
      }
    }
    return;
  }
  if (f.has_high) {
    for (int64_t r = 0; r < kPackRows; ++r) {
      uint32_t qh;
      std::memcpy(&qh, rows[r] + b * f.block_bytes + head, 4);
      for (int i = 0; i < 4; ++i) {
        uint8_t byte = 0;
        for (int k = 0; k < 8; ++k) byte |= static_cast<uint8_t>(((qh >> (4 * k + i)) & 1) << k);
        p[4 * r + i] = byte;
      }
    }
    p += 64;
  }
  const uint64_t qs_at = head + (f.has_high ? 4 : 0);
  for (int64_t r = 0; r < kPackRows; ++r) {
    const uint8_t* qs = rows[r] + b * f.block_bytes + qs_at;
    for (int j = 0; j < 4; ++j) std::memcpy(p + 64 * j + 4 * r, qs + 4 * j, 4);
  }
}

}  // namespace

bool CanPackWeightRows(DType type, int64_t rows, int64_t cols) {
  Format f;
  return FormatOf(type, &f) && rows > 0 && rows % kPackRows == 0 && cols > 0 && cols % kQ == 0;
}

Status PackWeightRows(const WeightMatrix& w, std::span<uint8_t> out) {
  Format f;
  if (!w.present() || !CanPackWeightRows(w.type, w.rows, w.cols) || !FormatOf(w.type, &f)) {
    return InvalidArgumentError("PackWeightRows: {} x {} {} has no packed layout", w.rows, w.cols,
                                DTypeName(w.type));
  }
  const uint64_t nb = static_cast<uint64_t>(w.cols / kQ);
  if (w.row_bytes != nb * f.block_bytes ||
      out.size() != static_cast<uint64_t>(w.rows) * w.row_bytes) {
    return InvalidArgumentError("PackWeightRows: {} bytes for {} rows of {} bytes", out.size(),
                                w.rows, w.row_bytes);
  }
  const uint64_t group_block = kPackRows * f.block_bytes;
  for (int64_t g = 0; g < w.rows / kPackRows; ++g) {
    const uint8_t* rows[kPackRows];
    for (int64_t r = 0; r < kPackRows; ++r) rows[r] = w.Row(g * kPackRows + r);
    for (uint64_t b = 0; b < nb; ++b) {
      PackBlock(f, rows, static_cast<int64_t>(b),
                out.data() + (static_cast<uint64_t>(g) * nb + b) * group_block);
    }
  }
  return Status::Ok();
}

}  // namespace ferry
