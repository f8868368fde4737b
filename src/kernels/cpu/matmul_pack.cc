// PackWeightRows: the row layout of the Q8_0 family, Q4_K and Q6_K rearranged into MatMul's
// packed layout (matmul.h describes it). Plain C++; runs once per weight at load.
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


// Q4_K super-block b of 16 rows (PackedQ4_K in matmul.h): 16 * 144 bytes at out.
void PackBlockQ4_K(const uint8_t* const* rows, int64_t b, uint8_t* out) {
  const BlockQ4_K* blk[kPackRows];
  for (int64_t r = 0; r < kPackRows; ++r) {
    blk[r] = reinterpret_cast<const BlockQ4_K*>(rows[r]) + b;
  }
  uint8_t* p = out;
  for (int64_t r = 0; r < kPackRows; ++r) std::memcpy(p + 2 * r, &blk[r]->d, 2);
  p += 2 * kPackRows;
  for (int64_t r = 0; r < kPackRows; ++r) std::memcpy(p + 2 * r, &blk[r]->dmin, 2);
  p += 2 * kPackRows;
  for (int k = 0; k < kKScaleSize; ++k) {
    for (int64_t r = 0; r < kPackRows; ++r) p[16 * k + r] = blk[r]->scales[k];
  }
  p += kKScaleSize * kPackRows;
  for (int c = 0; c < 4; ++c) {
    for (int k = 0; k < 8; ++k) {
      for (int64_t r = 0; r < kPackRows; ++r) {
        std::memcpy(p + 64 * (8 * c + k) + 4 * r, blk[r]->qs + 32 * c + 4 * k, 4);
      }
    }
  }
}

// The 6-bit code of element e (0..255) of a Q6_K block (llama.cpp's order: per 128-element
// half h, element 128h + 32s + l has its low four bits in ql[64h + 32(s & 1) + l] (low nibble
// for s < 2, high nibble otherwise) and its top two in bits 2s..2s+1 of qh[32h + l]).
int Q6Code(const BlockQ6_K& blk, int e) {
  const int h = e / 128, s = (e % 128) / 32, l = e % 32;
  const uint8_t ql = blk.ql[64 * h + 32 * (s & 1) + l];
  const int low = s < 2 ? (ql & 15) : (ql >> 4);
  const int high = (blk.qh[32 * h + l] >> (2 * s)) & 3;
  return low | (high << 4);
}

// Q6_K super-block b of 16 rows (PackedQ6_K in matmul.h): 16 * 210 bytes at out.
void PackBlockQ6_K(const uint8_t* const* rows, int64_t b, uint8_t* out) {
  const BlockQ6_K* blk[kPackRows];
  for (int64_t r = 0; r < kPackRows; ++r) {
    blk[r] = reinterpret_cast<const BlockQ6_K*>(rows[r]) + b;
  }
  uint8_t* p = out;
  for (int64_t r = 0; r < kPackRows; ++r) std::memcpy(p + 2 * r, &blk[r]->d, 2);
  p += 2 * kPackRows;
  for (int q = 0; q < 8; ++q) {
    for (int64_t r = 0; r < kPackRows; ++r) {
      p[32 * q + 2 * r] = static_cast<uint8_t>(blk[r]->scales[2 * q]);
      p[32 * q + 2 * r + 1] = static_cast<uint8_t>(blk[r]->scales[2 * q + 1]);
    }
  }
  p += 16 * kPackRows;
  uint8_t* ql = p;
  uint8_t* qh = p + 32 * 64;
  for (int64_t r = 0; r < kPackRows; ++r) {
    for (int j = 0; j < 32; ++j) {
      for (int i = 0; i < 4; ++i) {
        const int lo = Q6Code(*blk[r], 4 * j + i), hi = Q6Code(*blk[r], 128 + 4 * j + i);
        ql[64 * j + 4 * r + i] = static_cast<uint8_t>((lo & 15) | ((hi & 15) << 4));
      }
    }
    for (int j = 0; j < 16; ++j) {
      for (int i = 0; i < 4; ++i) {
        uint8_t byte = 0;
        for (int s = 0; s < 4; ++s) {
          byte |= static_cast<uint8_t>((Q6Code(*blk[r], 64 * s + 4 * j + i) >> 4) << (2 * s));
        }
        qh[64 * j + 4 * r + i] = byte;
      }
    }
  }
}

bool IsPackedK(DType type) { return type == DType::kQ4_K || type == DType::kQ6_K; }

}  // namespace

bool CanPackWeightRows(DType type, int64_t rows, int64_t cols) {
  if (rows <= 0 || rows % kPackRows != 0 || cols <= 0) return false;
  if (IsPackedK(type)) return cols % kQK_K == 0;
  Format f;
  return FormatOf(type, &f) && cols % kQ == 0;
}

Status PackWeightRows(const WeightMatrix& w, std::span<uint8_t> out) {
  Format f;
  if (!w.present() || !CanPackWeightRows(w.type, w.rows, w.cols) ||
      !(IsPackedK(w.type) || FormatOf(w.type, &f))) {
    return InvalidArgumentError("PackWeightRows: {} x {} {} has no packed layout", w.rows, w.cols,
                                DTypeName(w.type));
  }
  if (IsPackedK(w.type)) {
    f.block_bytes = w.type == DType::kQ4_K ? sizeof(BlockQ4_K) : sizeof(BlockQ6_K);
  }
  const uint64_t nb = static_cast<uint64_t>(w.cols / (IsPackedK(w.type) ? kQK_K : kQ));
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
      uint8_t* dst = out.data() + (static_cast<uint64_t>(g) * nb + b) * group_block;
      switch (w.type) {
        case DType::kQ4_K: PackBlockQ4_K(rows, static_cast<int64_t>(b), dst); break;
        case DType::kQ6_K: PackBlockQ6_K(rows, static_cast<int64_t>(b), dst); break;
        default: PackBlock(f, rows, static_cast<int64_t>(b), dst); break;
      }
    }
  }
  return Status::Ok();
}

}  // namespace ferry
