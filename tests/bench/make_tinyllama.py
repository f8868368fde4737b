"""Makes TinyLlama-1.1B-shaped GGUF files with random weights, for the CPU-speed benchmarks.

  python tests/bench/make_tinyllama.py OUT_DIR [--keep-f16] [--types q4_0,q8_0,q4_k_m]

The CPU-speed benchmark table (tests/bench/vs_llama_cpp.py) uses models with the shape of
TinyLlama-1.1B: architecture `llama`, 22 layers, 2048 wide, 5632 FFN, 32 query heads and 4 KV
heads (head dim 64), context 2048, rope base 10000, RMS-norm eps 1e-5, untied output matrix, and
the real 32000-token Llama-2 SentencePiece vocabulary (copied from
/work/shared/vocab/ggml-vocab-llama-spm.gguf). The weights are random (normal, std 0.02, fixed
seed): speed depends on the shapes and tensor types, not on the values, so no real checkpoint is
needed.

Steps: write an F16 GGUF (norm weights F32 near 1.0, every matrix F16), tensor by tensor so memory
stays at a few hundred MB; then quantize it with llama.cpp's own quantizer through
llama-cpp-python's low-level API (llama_model_quantize) into tinyllama-shape-<type>.gguf for each
type asked; then delete the F16 file unless --keep-f16 is given. Files that already exist are
skipped. The output directory must be outside the repository: model files are never committed.

Depth 16384 (vs_llama_cpp.py -d 16384) needs a longer trained context than TinyLlama's 2048,
which both engines enforce. The 32k-context copy used for that row is this file with one
metadata value changed in place (speed does not depend on it):
  cp tinyllama-shape-q4_0.gguf tinyllama-shape-q4_0-32k.gguf
  gguf-set-metadata --force tinyllama-shape-q4_0-32k.gguf llama.context_length 32768
(gguf-set-metadata comes with PyPI `gguf`.)

Python: needs numpy, gguf (PyPI `gguf`) and llama-cpp-python. Run it with /work/lcp-venv/bin/python,
which has llama-cpp-python 0.3.36 and gguf 0.19.0. The project's .venv (scripts/setup,
scripts/requirements.txt) also has gguf 0.19.0 and numpy, but not llama-cpp-python, so it can only
write the F16 file, not quantize it.
"""
import argparse
import ctypes
import os
import sys
import time

import numpy as np

import gguf

VOCAB_FILE = "/work/shared/vocab/ggml-vocab-llama-spm.gguf"

# TinyLlama-1.1B hyperparameters.
N_LAYER = 22
N_EMBD = 2048
N_FF = 5632
N_HEAD = 32
N_HEAD_KV = 4
HEAD_DIM = N_EMBD // N_HEAD  # 64
N_CTX_TRAIN = 2048
ROPE_FREQ_BASE = 10000.0
RMS_EPS = 1e-5

SEED = 1234
WEIGHT_STD = 0.02

# Name used on the command line -> (llama_cpp ftype constant name, output file suffix).
QUANT_TYPES = {
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
}


def copy_tokenizer(writer, vocab_path):
    """Copies every tokenizer.* key of vocab_path into writer, with its GGUF type. Returns the
    number of tokens."""
    reader = gguf.GGUFReader(vocab_path)
    n_vocab = None
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub_type = field.types[-1]
            values = field.contents()
            writer.add_key_value(key, values, vtype, sub_type)
            if key == "tokenizer.ggml.tokens":
                n_vocab = len(values)
        else:
            writer.add_key_value(key, field.contents(), vtype)
    if n_vocab is None:
        sys.exit(f"{vocab_path}: no tokenizer.ggml.tokens")
    return n_vocab


def tensor_plan(n_vocab):
    """Returns [(name, numpy shape, kind)] in file order. Numpy shapes are (rows, cols); the GGUF
    writer stores them reversed, so (rows, cols) becomes ggml ne = [cols, rows], as llama.cpp
    expects (e.g. attn_k: ne = [2048, 256])."""
    kv_dim = N_HEAD_KV * HEAD_DIM
    plan = [("token_embd.weight", (n_vocab, N_EMBD), "matrix")]
    for i in range(N_LAYER):
        p = f"blk.{i}."
        plan += [
            (p + "attn_norm.weight", (N_EMBD,), "norm"),
            (p + "attn_q.weight", (N_EMBD, N_EMBD), "matrix"),
            (p + "attn_k.weight", (kv_dim, N_EMBD), "matrix"),
            (p + "attn_v.weight", (kv_dim, N_EMBD), "matrix"),
            (p + "attn_output.weight", (N_EMBD, N_EMBD), "matrix"),
            (p + "ffn_norm.weight", (N_EMBD,), "norm"),
            (p + "ffn_gate.weight", (N_FF, N_EMBD), "matrix"),
            (p + "ffn_up.weight", (N_FF, N_EMBD), "matrix"),
            (p + "ffn_down.weight", (N_EMBD, N_FF), "matrix"),
        ]
    plan += [
        ("output_norm.weight", (N_EMBD,), "norm"),
        ("output.weight", (n_vocab, N_EMBD), "matrix"),
    ]
    return plan


def random_tensor(rng, shape, kind):
    """Norm weights: F32 around 1.0. Matrices: F16, normal with std WEIGHT_STD, generated in
    row chunks so the F32 temporary stays small."""
    if kind == "norm":
        return (1.0 + 0.01 * rng.standard_normal(shape, dtype=np.float32)).astype(np.float32)
    out = np.empty(shape, dtype=np.float16)
    rows = shape[0]
    chunk = max(1, (16 * 1024 * 1024) // shape[1])  # about 16M values (64 MB of F32) a chunk
    for r in range(0, rows, chunk):
        block = rng.standard_normal((min(chunk, rows - r), shape[1]), dtype=np.float32)
        block *= WEIGHT_STD
        out[r:r + block.shape[0]] = block
    return out


def write_f16(path, vocab_path):
    """Writes the F16 model to path, one tensor at a time (only one tensor in memory at once)."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("TinyLlama-1.1B shape, random weights")
    writer.add_context_length(N_CTX_TRAIN)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(ROPE_FREQ_BASE)
    writer.add_layer_norm_rms_eps(RMS_EPS)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = copy_tokenizer(writer, vocab_path)
    writer.add_vocab_size(n_vocab)

    # Declare every tensor first (name, shape, type, size), then stream the data in that order.
    plan = tensor_plan(n_vocab)
    for name, shape, kind in plan:
        dtype = np.float32 if kind == "norm" else np.float16
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        writer.add_tensor_info(name, shape, np.dtype(dtype), nbytes)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()

    rng = np.random.default_rng(SEED)
    for name, shape, kind in plan:
        writer.write_tensor_data(random_tensor(rng, shape, kind))
    writer.close()


def quantize(src, dst, ftype_name):
    """Quantizes src into dst with llama.cpp's quantizer (default parameters, all cores)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, ftype_name)
    params.nthread = os.cpu_count() or 1
    rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        sys.exit(f"llama_model_quantize({src} -> {dst}, {ftype_name}) failed: {rc}")


def size_str(path):
    return f"{os.path.getsize(path) / 2**20:,.1f} MiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", help="where to write the files (outside the repository)")
    ap.add_argument("--keep-f16", action="store_true", help="keep the F16 intermediate file")
    ap.add_argument("--types", default="q4_0,q8_0,q4_k_m",
                    help="comma-separated quantization types (default: q4_0,q8_0,q4_k_m)")
    ap.add_argument("--vocab", default=VOCAB_FILE, help="GGUF file to copy tokenizer.* from")
    args = ap.parse_args()

    types = [t.strip().lower() for t in args.types.split(",") if t.strip()]
    for t in types:
        if t not in QUANT_TYPES:
            sys.exit(f"unknown type {t!r}; known: {', '.join(QUANT_TYPES)}")

    os.makedirs(args.out_dir, exist_ok=True)
    f16 = os.path.join(args.out_dir, "tinyllama-shape-f16.gguf")
    targets = [(t, os.path.join(args.out_dir, f"tinyllama-shape-{t}.gguf")) for t in types]
    todo = [(t, p) for t, p in targets if not os.path.exists(p)]
    for t, p in targets:
        if os.path.exists(p):
            print(f"exists, skipped: {p} ({size_str(p)})")

    # The F16 file is needed only to quantize something new, or when asked to keep it.
    f16_made = False
    if (todo or args.keep_f16) and not os.path.exists(f16):
        t0 = time.time()
        print(f"writing {f16} ...", flush=True)
        write_f16(f16, args.vocab)
        f16_made = True
        print(f"wrote {f16} ({size_str(f16)}, {time.time() - t0:.0f} s)", flush=True)

    for t, p in todo:
        t0 = time.time()
        print(f"quantizing to {t} ...", flush=True)
        quantize(f16, p, QUANT_TYPES[t])
        print(f"wrote {p} ({size_str(p)}, {time.time() - t0:.0f} s)", flush=True)

    if os.path.exists(f16) and not args.keep_f16 and (f16_made or todo):
        os.remove(f16)
        print(f"removed {f16}")


if __name__ == "__main__":
    main()
