"""Writes small random-weight GGUF models (llama, qwen2, qwen3, gemma3) for the reference tests.

Each model is fully determined by (arch, type, seed): the same command writes the same bytes on
any machine, so the fixtures made from these models by llama.cpp (tests/reference/regenerate)
stay valid for the models the C++ test regenerates at test time.

  python make_synthetic.py --arch llama|qwen2|qwen3|gemma3 --type f32|f16|q8_0|q4_0|q4_k|q6_k OUT.gguf
  python make_synthetic.py --arch qwen2yarn|llamafreqs --type f32|q8_0 OUT.gguf   # RoPE variants
  python make_synthetic.py --all DIR   # the 4 x 6 models plus the variants, DIR/synthetic-ARCH-TYPE.gguf

Determinism:
- Random numbers come from a counter-based generator (SplitMix64 over (seed, tensor name,
  index)) written here with numpy uint64 arithmetic, not from numpy.random: numpy does not
  promise that a Generator's stream stays the same across releases (NEP 19). Normal-like values
  are Irwin-Hall sums of four 24-bit uniforms, turned into floats with float64 arithmetic only
  (each step correctly rounded), then cast to float32. No transcendental functions are involved
  (except in llamafreqs' rope_freqs, see below).
- F16/Q8_0/Q4_0 use the gguf package's numpy quantizers (elementwise IEEE arithmetic); Q4_K and
  Q6_K, which gguf cannot quantize, use ferry's own ferry_quant_tool (built with
  -ffp-contract=off; one process per tensor, no threads).
- --all checks each model against tests/reference/fixtures/synthetic.sha256 (the checksums of
  the models the fixtures were made from) and fails if one differs: then the fixtures no longer
  describe these models, and tests/reference/regenerate must be run (it passes --write-sums).

Shapes (tensor names and ne order as in llama.cpp's src/llama-arch.cpp): n_embd 256, n_ff 512, vocab 512 (the SentencePiece vocabulary of
shared/models/stories260K.gguf, copied so llama.cpp can load and tokenize). Every 2-D weight's
ne[0] is a multiple of 256, so all six types apply to every matrix, token_embd included; 1-D
tensors (norms, biases) stay F32.
- llama:  3 layers, 4 heads x 64, 2 KV heads, NORM RoPE, separate `output` matrix.
- qwen2:  3 layers, 4 heads x 64, 2 KV heads, q/k/v biases, NEOX RoPE, tied output.
- qwen3:  3 layers, 8 heads x 64 (n_head*d = 512 != n_embd), 2 KV heads, Q/K norms, tied output.
- gemma3: 6 layers (0-4 sliding window 16, 5 global), 4 heads x 128, 1 KV head (n_head*d = 512
  != n_embd), Q/K norms, post-attention/post-FFN norms, norm weights stored with the +1, GELU,
  embeddings scaled by sqrt(n_embd), tied output.
Weights are N(0, 1/fan_in)-like so activations keep unit scale; norm weights are 1 + 0.1*N.

RoPE variants (VARIANTS lists which types are written; weights are those of the base architecture,
since the noise is keyed by tensor name, so only the rotary embedding differs):
- qwen2yarn: qwen2 with YaRN scaling as Qwen2 GGUFs carry it (rope.scaling.type yarn, factor 4,
  original_context_length 64, as convert_hf_to_gguf.py writes them). With n_rot 64 and base 1e6 the YaRN ramp spans
  pairs 0..6 (extrapolated, mixed, interpolated pairs all occur), and the fixtures' prompts plus
  64 generated tokens run past the original context of 64.
- llamafreqs: llama with a Llama 3.1-style `rope_freqs` tensor ([n_rot/2] f32 frequency divisors),
  computed with the Llama 3 formula (factor 8, low 1, high 4, original context 64) so that pairs
  0..3 keep ff = 1, pairs 4..8 are smoothed and pairs 9.. get ff = 8. This is the one step that
  uses a transcendental function (pow) -- in float64, then rounded to f32, so a last-bit libm
  difference could change a stored value only by landing on an f32 rounding boundary (the
  checksums would show it).
"""
import argparse
import hashlib
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VOCAB_MODEL = ROOT.parent / "shared" / "models" / "stories260K.gguf"
SUMS = HERE / "fixtures" / "synthetic.sha256"

ARCHS = ("llama", "qwen2", "qwen3", "gemma3")
TYPES = ("f32", "f16", "q8_0", "q4_0", "q4_k", "q6_k")
# RoPE variants of a base architecture (CONFIGS[name]["arch"]), in fewer types: the rotary
# embedding is f32 arithmetic after the matmuls, so F32 pins it to llama.cpp tightly; Q8_0 shows
# it composes with activation rounding.
VARIANTS = {"qwen2yarn": ("f32", "q8_0"), "llamafreqs": ("f32",)}
# Every (name, type) that --all writes, in order.
MODELS = [(a, t) for a in ARCHS for t in TYPES] + [(a, t) for a, ts in VARIANTS.items() for t in ts]

# type -> (ggml type, general.file_type). Pure Q4_K / Q6_K files have no exact llama_ftype;
# 14 (MOSTLY_Q4_K_S) and 18 (MOSTLY_Q6_K) are the nearest; the key is informational.
QTYPES = {
    "f32": (QT.F32, 0), "f16": (QT.F16, 1), "q8_0": (QT.Q8_0, 7), "q4_0": (QT.Q4_0, 2),
    "q4_k": (QT.Q4_K, 14), "q6_k": (QT.Q6_K, 18),
}

N_EMBD, N_FF, CONTEXT, EPS = 256, 512, 2048, 1e-6
# embd_std / out_norm: see the comment on token_embd in build().
CONFIGS = {
    "llama": dict(n_layer=3, n_head=4, n_head_kv=2, head_dim=64, rope_base=10000.0,
                  tied=False, bias=False, qk_norm=False, gemma=False,
                  embd_std=0.25, out_norm=1.0),
    "qwen2": dict(n_layer=3, n_head=4, n_head_kv=2, head_dim=64, rope_base=1000000.0,
                  tied=True, bias=True, qk_norm=False, gemma=False,
                  embd_std=0.03, out_norm=8.0),
    "qwen3": dict(n_layer=3, n_head=8, n_head_kv=2, head_dim=64, rope_base=1000000.0,
                  tied=True, bias=False, qk_norm=True, gemma=False,
                  embd_std=0.03, out_norm=8.0),
    "gemma3": dict(n_layer=6, n_head=4, n_head_kv=1, head_dim=128, rope_base=1000000.0,
                   tied=True, bias=False, qk_norm=True, gemma=True, sliding_window=16,
                   embd_std=0.015, out_norm=12.0),
}
for _name in ARCHS:
    CONFIGS[_name]["arch"] = _name
CONFIGS["qwen2yarn"] = dict(CONFIGS["qwen2"],
                            yarn=dict(factor=4.0, original_context_length=64))
CONFIGS["llamafreqs"] = dict(CONFIGS["llama"],
                             rope_freqs=dict(factor=8.0, low_freq_factor=1.0,
                                             high_freq_factor=4.0, original_context_length=64))

_U64 = np.uint64
_MASK24 = (1 << 24) - 1


def _splitmix64(x):
    """SplitMix64 finalizer over a uint64 array (wrapping arithmetic)."""
    z = x + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def noise(seed, name, shape):
    """Deterministic zero-mean, unit-variance noise (Irwin-Hall of 4 uniforms), float64."""
    key = int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little")
    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        ctr = np.arange(4 * n, dtype=_U64) + _U64(key)
        u = (_splitmix64(_splitmix64(ctr) ^ _U64(key)) >> _U64(40)).astype(np.int64)
    s = u.reshape(n, 4).sum(axis=1)  # exact integer sum, mean 2 * (2^24 - 1)
    z = (s - 2 * _MASK24).astype(np.float64) * (3.0 ** 0.5 / (1 << 24))
    return z.reshape(shape)


def weight(seed, name, shape, std):
    return (noise(seed, name, shape) * std).astype(np.float32)


def norm_weight(seed, name, n):
    return (1.0 + 0.1 * noise(seed, name, (n,))).astype(np.float32)


def llama3_rope_freqs(n_rot, base, factor, low_freq_factor, high_freq_factor,
                      original_context_length):
    """Llama 3.1's per-pair frequency divisors ff_i, float64 -> f32 [n_rot/2].

    As llama.cpp's convert_hf_to_gguf.py LlamaModel.generate_extra_tensors computes rope_freqs.
    """
    low_wavelen = original_context_length / low_freq_factor
    high_wavelen = original_context_length / high_freq_factor
    ff = []
    for i in range(n_rot // 2):
        wavelen = 2.0 * math.pi * base ** (2.0 * i / n_rot)  # 2 pi / omega_i
        if wavelen < high_wavelen:
            ff.append(1.0)
        elif wavelen > low_wavelen:
            ff.append(factor)
        else:
            smooth = (original_context_length / wavelen - low_freq_factor) / (
                high_freq_factor - low_freq_factor)
            ff.append(1.0 / ((1.0 - smooth) / factor + smooth))
    return np.array(ff, dtype=np.float64).astype(np.float32)


def find_quant_tool(explicit):
    cands = [explicit, os.environ.get("FERRY_QUANT_TOOL"),
             ROOT / "build" / "bin" / "ferry_quant_tool"]
    for c in cands:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return str(c)
    sys.exit("make_synthetic: ferry_quant_tool not found (build it: ninja -C build "
             "ferry_quant_tool; or pass --quant-tool / set FERRY_QUANT_TOOL)")


def quantize(w, qtype, quant_tool):
    """w: float32 [rows, cols] -> (array, raw_dtype or None) for GGUFWriter.add_tensor."""
    if qtype == QT.F32:
        return w, None
    if qtype in (QT.F16, QT.Q8_0, QT.Q4_0):
        q = gguf.quants.quantize(w, qtype)
        return q, (None if qtype == QT.F16 else qtype)
    # Q4_K / Q6_K: blocks are independent, so quantizing the whole tensor as one row gives the
    # same bytes as quantizing row by row.
    with tempfile.TemporaryDirectory() as d:
        src, dst = Path(d) / "in.f32", Path(d) / "out.bin"
        np.ascontiguousarray(w, dtype="<f4").tofile(src)
        subprocess.run([quant_tool, "quant", qtype.name, str(src), str(dst)], check=True)
        raw = np.fromfile(dst, dtype=np.uint8)
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return raw.reshape(w.shape[0], w.shape[1] // block * size), qtype


def copy_tokenizer(writer):
    reader = gguf.GGUFReader(str(VOCAB_MODEL))
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        sub = field.types[1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub)


def build(name, type_name, out, seed=0, quant_tool=None):
    """Writes synthetic-NAME-TYPE; NAME is an architecture or a variant (see CONFIGS)."""
    cfg = CONFIGS[name]
    qtype, ftype = QTYPES[type_name]
    n_layer, n_head, n_kv, d = cfg["n_layer"], cfg["n_head"], cfg["n_head_kv"], cfg["head_dim"]
    qd, kd = n_head * d, n_kv * d
    tool = find_quant_tool(quant_tool) if qtype in (QT.Q4_K, QT.Q6_K) else None

    w = gguf.GGUFWriter(str(out), cfg["arch"])
    w.add_name(f"synthetic-{name}-{type_name}")
    w.add_file_type(ftype)
    w.add_context_length(CONTEXT)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(n_layer)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_key_length(d)
    w.add_value_length(d)
    w.add_rope_dimension_count(d)
    w.add_rope_freq_base(cfg["rope_base"])
    w.add_layer_norm_rms_eps(EPS)
    if "sliding_window" in cfg:
        w.add_sliding_window(cfg["sliding_window"])
    if "yarn" in cfg:
        # The keys the Qwen2 converter writes for rope_scaling {type: yarn}.
        w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        w.add_rope_scaling_factor(cfg["yarn"]["factor"])
        w.add_rope_scaling_orig_ctx_len(cfg["yarn"]["original_context_length"])
    copy_tokenizer(w)
    n_vocab = len(gguf.GGUFReader(str(VOCAB_MODEL)).fields["tokenizer.ggml.tokens"].data)

    def mat(name, n_out, n_in, std=None):
        # numpy [n_out, n_in] = GGUF ne [n_in, n_out]; std defaults to 1/sqrt(fan_in).
        f = weight(seed, name, (n_out, n_in), std if std is not None else n_in ** -0.5)
        arr, raw = quantize(f, qtype, tool)
        if raw is None:
            w.add_tensor(name, arr)
        else:
            w.add_tensor(name, arr, raw_shape=arr.shape, raw_dtype=raw)

    def vec(name, n, bias=False):
        v = weight(seed, name, (n,), 0.2) if bias else norm_weight(seed, name, n)
        w.add_tensor(name, v)

    # Logits have a spread of a few units (top-2 gaps mostly > 0.01). With a tied output, a
    # token's own embedding in the residual raises its own logit by ~|e|^2; small embeddings
    # (layer outputs dominate the residual) and a larger output_norm keep greedy decoding from
    # repeating the last token forever.
    mat("token_embd.weight", n_vocab, N_EMBD, std=cfg["embd_std"])
    w.add_tensor("output_norm.weight",
                 norm_weight(seed, "output_norm.weight", N_EMBD) * np.float32(cfg["out_norm"]))
    if not cfg["tied"]:
        mat("output.weight", n_vocab, N_EMBD, std=0.25)
    if "rope_freqs" in cfg:
        w.add_tensor("rope_freqs.weight",
                     llama3_rope_freqs(d, cfg["rope_base"], **cfg["rope_freqs"]))
    for l in range(n_layer):
        p = f"blk.{l}."
        vec(p + "attn_norm.weight", N_EMBD)
        mat(p + "attn_q.weight", qd, N_EMBD)
        mat(p + "attn_k.weight", kd, N_EMBD)
        mat(p + "attn_v.weight", kd, N_EMBD)
        if cfg["bias"]:
            vec(p + "attn_q.bias", qd, bias=True)
            vec(p + "attn_k.bias", kd, bias=True)
            vec(p + "attn_v.bias", kd, bias=True)
        if cfg["qk_norm"]:
            vec(p + "attn_q_norm.weight", d)
            vec(p + "attn_k_norm.weight", d)
        mat(p + "attn_output.weight", N_EMBD, qd)
        if cfg["gemma"]:
            vec(p + "post_attention_norm.weight", N_EMBD)
        vec(p + "ffn_norm.weight", N_EMBD)
        mat(p + "ffn_gate.weight", N_FF, N_EMBD)
        mat(p + "ffn_up.weight", N_FF, N_EMBD)
        mat(p + "ffn_down.weight", N_EMBD, N_FF)
        if cfg["gemma"]:
            vec(p + "post_ffw_norm.weight", N_EMBD)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def inputs_stamp(seed, quant_tool):
    """What the models depend on: this script, the quantizer binary, numpy and gguf."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(Path(find_quant_tool(quant_tool)).read_bytes())
    h.update(f"{seed} numpy {np.__version__} gguf {gguf_version()}".encode())
    return h.hexdigest()


def gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:
        return "unknown"


def build_all(out_dir, seed, quant_tool, write_sums, check):
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    want = {}
    if check and SUMS.exists():
        want = dict(reversed(line.split()) for line in SUMS.read_text().splitlines() if line)
    # make test runs this every time: models written before from the same inputs (same script,
    # quantizer binary and package versions, recorded in a stamp) and still matching their
    # checksums are kept; otherwise all are written again.
    stamp_path = out_dir / ".inputs"
    stamp = inputs_stamp(seed, quant_tool)
    reuse = (not write_sums and stamp_path.exists() and stamp_path.read_text() == stamp)
    if stamp_path.exists():
        stamp_path.unlink()
    sums, reused = {}, 0
    for arch, t in MODELS:
        name = f"synthetic-{arch}-{t}.gguf"
        path = out_dir / name
        if reuse and name in want and path.exists() and sha256(path) == want[name]:
            sums[name] = want[name]
            reused += 1
            continue
        build(arch, t, path, seed, quant_tool)
        sums[name] = sha256(path)
    stamp_path.write_text(stamp)
    if write_sums:
        SUMS.write_text("".join(f"{h}  {n}\n" for n, h in sums.items()))
        print(f"make_synthetic: wrote {SUMS}", file=sys.stderr)
    elif want:
        bad = [n for n, h in sums.items() if want.get(n) != h]
        if bad:
            sys.exit("make_synthetic: these models differ from the ones the fixtures were made "
                     f"from ({SUMS}): {', '.join(bad)}. If the generator or ferry's quantizer "
                     "changed on purpose, run tests/reference/regenerate.")
    total = sum((out_dir / n).stat().st_size for n in sums)
    print(f"make_synthetic: {len(sums)} models in {out_dir} ({total / 2**20:.1f} MiB, "
          f"{len(sums) - reused} written)", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", help="OUT.gguf, or the directory with --all")
    ap.add_argument("--arch", choices=ARCHS + tuple(VARIANTS),
                    help="an architecture, or a RoPE variant of one")
    ap.add_argument("--type", choices=TYPES)
    ap.add_argument("--all", action="store_true",
                    help="write all archs x types, and the variants, into OUT/")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quant-tool", help="path of ferry_quant_tool (Q4_K, Q6_K)")
    ap.add_argument("--write-sums", action="store_true",
                    help=f"with --all: record the models' checksums in {SUMS.name}")
    ap.add_argument("--no-check", action="store_true",
                    help=f"with --all: do not compare against {SUMS.name}")
    args = ap.parse_args()
    if args.all:
        if args.seed != 0 and not args.no_check:
            ap.error("the checksums are for seed 0; add --no-check")
        build_all(args.out, args.seed, args.quant_tool, args.write_sums, not args.no_check)
    else:
        if not args.arch or not args.type:
            ap.error("give --arch and --type, or --all")
        build(args.arch, args.type, args.out, args.seed, args.quant_tool)


if __name__ == "__main__":
    main()
