"""ferry's reference quant kernels (src/kernels/ref) against the PyPI `gguf` package.

Dequantization of every type ferry supports must give the same float32 bits as
gguf.quants.dequantize; quantization to F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0 must give the
same bytes as gguf.quants.quantize. Q4_K and Q6_K quantization (not in `gguf`) must produce
blocks that `gguf` decodes to values close to the input. ferry's side runs through the test
helper `ferry_quant_tool` (FERRY_BUILD_DIR/bin).
"""
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

from conftest import binary, run

N_BLOCKS = 1024  # random blocks per type, before the edge cases

# Byte offsets of the fp16 scale fields (d, m, dmin) in each block.
SCALE_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
DEQUANT_TYPES = [T.F32, T.F16, T.BF16, *SCALE_FIELDS]
QUANT_TYPES = [T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]

# fp16 bit patterns for the edge blocks: zeros of both signs, subnormals (smallest, largest, a
# negative one), the smallest normal, the largest finite values, ordinary negative scales.
EDGE_SCALES = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0xA11F, 0xBC00]


@pytest.fixture(scope="module")
def tool():
    return binary("ferry_quant_tool")


def ferry_dequant(tool, tmp_path, qtype, raw: np.ndarray) -> np.ndarray:
    src, dst = tmp_path / "in.bin", tmp_path / "out.f32"
    raw.astype(np.uint8).tofile(src)
    run([tool, "dequant", qtype.name, src, dst])
    return np.fromfile(dst, dtype="<f4")


def ferry_quant(tool, tmp_path, qtype, values: np.ndarray) -> np.ndarray:
    src, dst = tmp_path / "in.f32", tmp_path / "out.bin"
    values.astype("<f4").tofile(src)
    run([tool, "quant", qtype.name, src, dst])
    return np.fromfile(dst, dtype=np.uint8)


def fp16_bits(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).astype(np.float16).view(np.uint16)


def random_blocks(qtype, rng) -> np.ndarray:
    """Raw bytes: N_BLOCKS random blocks with finite scales, then edge blocks (one per edge
    scale per scale field, the other fields random)."""
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if qtype == T.F32:  # any bit pattern, NaN payloads included
        return rng.integers(0, 256, size=N_BLOCKS * 4 * 32, dtype=np.uint8)
    if qtype in (T.F16, T.BF16):  # every 16-bit pattern, then random ones
        every = np.arange(65536, dtype=np.uint16)
        more = rng.integers(0, 65536, size=N_BLOCKS * 32, dtype=np.uint16)
        return np.concatenate([every, more]).view(np.uint8)
    fields = SCALE_FIELDS[qtype]
    n_edge = len(EDGE_SCALES) * len(fields)
    blocks = rng.integers(0, 256, size=(N_BLOCKS + n_edge, type_size), dtype=np.uint8)
    for k, off in enumerate(fields):
        # d and dmin around 0.01 as in real weights; m (Q4_1/Q5_1, offset 2) around 0.1.
        scale = 0.1 if qtype in (T.Q4_1, T.Q5_1) and off == 2 else 0.01
        bits = fp16_bits(rng.standard_normal(N_BLOCKS + n_edge) * scale)
        blocks[:, off:off + 2] = bits.view(np.uint8).reshape(-1, 2)
    row = N_BLOCKS
    for off in fields:
        for h in EDGE_SCALES:
            blocks[row, off:off + 2] = np.array([h], dtype="<u2").view(np.uint8)
            row += 1
    assert row == len(blocks)
    assert np.isfinite(np.concatenate([blocks[:, off:off + 2].copy().view(np.float16).ravel()
                                       for off in fields])).all()
    return blocks.ravel()


@pytest.mark.parametrize("qtype", DEQUANT_TYPES, ids=lambda t: t.name)
def test_dequantize_is_bit_exact(tool, tmp_path, qtype):
    rng = np.random.default_rng(1000 + qtype.value)
    raw = random_blocks(qtype, rng)
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    assert raw.size % type_size == 0 and raw.size // type_size >= N_BLOCKS
    with np.errstate(all="ignore"):
        theirs = np.asarray(quants.dequantize(raw, qtype), dtype=np.float32).ravel()
    mine = ferry_dequant(tool, tmp_path, qtype, raw)
    assert mine.shape == theirs.shape == (raw.size // type_size * block_size,)
    diff = np.flatnonzero(mine.view(np.uint32) != theirs.view(np.uint32))
    assert diff.size == 0, (
        f"{diff.size} of {mine.size} values differ; first at element {diff[0]} "
        f"(block {diff[0] // block_size}): ferry {mine[diff[0]]!r} "
        f"(0x{mine.view(np.uint32)[diff[0]]:08x}), gguf {theirs[diff[0]]!r} "
        f"(0x{theirs.view(np.uint32)[diff[0]]:08x})")


def quant_input(rng) -> np.ndarray:
    """Float32 values in blocks of 32 (a multiple of every legacy block size): random normal
    blocks at several magnitudes, then edge blocks."""
    n = N_BLOCKS
    normal = rng.standard_normal((n, 32)).astype(np.float32)
    normal *= np.float32(10.0) ** rng.integers(-3, 4, size=(n, 1)).astype(np.float32)
    edge = []

    def block(values, fill=0.0):
        b = np.full(32, fill, dtype=np.float32)
        b[:len(values)] = np.asarray(values, dtype=np.float32)
        edge.append(b)

    block([])                                   # all +0
    block([], fill=-0.0)                        # all -0
    block([], fill=1.5)                         # constant
    block([], fill=-3.0)
    block([-5.0, 5.0, 1.0, -2.0])               # equal -max and +max, -max first
    block([5.0, -5.0, 1.0, -2.0])               # +max first
    block([0.25, -7.0, 7.0, -7.0, 7.0])
    # Rounding ties at each type's step: with these extremes d is 1 (or -1) and x / d + offset
    # lands exactly on .5 for the half-integers.
    block([-8.0] + [k + 0.5 for k in range(-8, 8)] + [-0.5, 0.5])        # Q4_0
    block([8.0] + [k + 0.5 for k in range(-8, 8)])                       # Q4_0, d = -1
    block([-16.0] + [k + 0.5 for k in range(-16, 15)])                   # Q5_0
    block([0.0, 15.0] + [k + 0.5 for k in range(15)])                    # Q4_1
    block([0.0, 31.0] + [k + 0.5 for k in range(30)])                    # Q5_1
    block([127.0] + [k + 0.5 for k in range(-20, 11)])                   # Q8_0
    block([-127.0] + [k + 0.5 for k in range(90, 121)])
    # d lands exactly halfway between two fp16 values (rounds to even), for Q8_0 and Q4_0.
    block([127.0 * (1 + 2.0 ** -11), 3.0, -1.0])
    block([127.0 * (1 + 3 * 2.0 ** -11), 3.0, -1.0])
    block([-8.0 * (1 + 2.0 ** -11), 3.0, -1.0])
    # Large magnitudes: d beyond the fp16 range (stored as inf), and a range that overflows f32.
    block(rng.standard_normal(32) * 1e6)
    block(rng.standard_normal(32) * 1e30)
    block([3e38, -3e38, 1.0, 2e38])
    # Tiny magnitudes: f32 subnormals, where 1 / d overflows to inf.
    block(rng.standard_normal(32) * 1e-40)
    block(rng.standard_normal(32) * 1e-20)
    return np.concatenate([normal.ravel(), np.concatenate(edge)])


@pytest.mark.parametrize("qtype", QUANT_TYPES, ids=lambda t: t.name)
def test_quantize_is_byte_exact(tool, tmp_path, qtype):
    rng = np.random.default_rng(2000 + qtype.value)
    values = quant_input(rng)
    if qtype in (T.F32, T.F16, T.BF16):  # plus any bit pattern: NaNs, infinities, subnormals
        bits = rng.integers(0, 2**32, size=N_BLOCKS * 32, dtype=np.uint32)
        values = np.concatenate([values, bits.view(np.float32)])
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    with np.errstate(all="ignore"):
        theirs = np.ascontiguousarray(quants.quantize(values, qtype)).view(np.uint8).ravel()
    mine = ferry_quant(tool, tmp_path, qtype, values)
    assert mine.size == theirs.size == values.size // block_size * type_size
    if not np.array_equal(mine, theirs):
        bad = np.flatnonzero(mine != theirs)[0] // type_size
        span = slice(bad * type_size, (bad + 1) * type_size)
        x = values[bad * block_size:(bad + 1) * block_size]
        pytest.fail(f"block {bad} differs:\n input {x}\n ferry {mine[span].tobytes().hex()}"
                    f"\n gguf  {theirs[span].tobytes().hex()}")


# Q4_K and Q6_K: `gguf` cannot quantize them, but it decodes ferry's blocks independently. The
# bounds are those of kernels_ref_test (relative rms error on normal data; see there).
@pytest.mark.parametrize("qtype,bound", [(T.Q4_K, 0.1), (T.Q6_K, 0.03)], ids=["Q4_K", "Q6_K"])
def test_k_quants_decode_close_to_input(tool, tmp_path, qtype, bound):
    rng = np.random.default_rng(3000 + qtype.value)
    magnitudes = np.float32(10.0) ** rng.integers(-2, 3, size=(N_BLOCKS, 1)).astype(np.float32)
    values = (rng.standard_normal((N_BLOCKS, 256)).astype(np.float32) * magnitudes).ravel()
    raw = ferry_quant(tool, tmp_path, qtype, values)
    assert raw.size == N_BLOCKS * GGML_QUANT_SIZES[qtype][1]
    theirs = np.asarray(quants.dequantize(raw, qtype), dtype=np.float32).ravel()
    mine = ferry_dequant(tool, tmp_path, qtype, raw)
    assert np.array_equal(mine.view(np.uint32), theirs.view(np.uint32))
    blocks_x = values.reshape(N_BLOCKS, 256).astype(np.float64)
    blocks_y = theirs.reshape(N_BLOCKS, 256).astype(np.float64)
    rel = np.sqrt(((blocks_y - blocks_x) ** 2).sum(axis=1) / (blocks_x ** 2).sum(axis=1))
    assert np.isfinite(theirs).all()
    rms = np.sqrt((rel ** 2).mean())
    assert rms < bound, f"relative rms error {rms:.4f}"
    assert rel.max() < 2 * bound, f"worst block {rel.argmax()}: {rel.max():.4f}"


def test_tool_rejects_bad_input(tool, tmp_path):
    src = tmp_path / "in.bin"
    np.zeros(100, dtype=np.uint8).tofile(src)  # not a whole number of 144-byte Q4_K blocks
    proc = run([tool, "dequant", "Q4_K", src, tmp_path / "out.f32"], check=False)
    assert proc.returncode == 1 and "144" in proc.stderr
    np.zeros(33, dtype=np.float32).tofile(src)  # 33 floats are not whole Q8_0 blocks
    proc = run([tool, "quant", "Q8_0", src, tmp_path / "out.bin"], check=False)
    assert proc.returncode == 1 and "block size" in proc.stderr
    proc = run([tool, "quant", "Q2_K", src, tmp_path / "out.bin"], check=False)
    assert proc.returncode == 1 and "Unimplemented" in proc.stderr
    proc = run([tool, "dequant", "nope", src, tmp_path / "out.f32"], check=False)
    assert proc.returncode == 1
