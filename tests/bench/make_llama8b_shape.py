"""Writes a Llama-3-8B-shaped Q4_0 GGUF with random weights, quickly and without llama.cpp: for
measuring what scales with a big model's bytes (the load-time finiteness check, load time, RSS).

  python tests/bench/make_llama8b_shape.py OUT.gguf

Shape: architecture `llama`, 32 layers, 4096 wide, 14336 FFN, 32 query and 8 KV heads (head dim
128), rope base 500000, context 8192, and the real 32000-token Llama-2 SentencePiece vocabulary
(copied from ../shared/vocab/ggml-vocab-llama-spm.gguf; Llama 3's own is 128256 tokens, which
changes only the embedding and output sizes). Every matrix is Q4_0 written block by block: a
random fp16 scale in [0.001, 0.01) and random 4-bit values, so the file is valid and finite.
About 4.1 GB; the output must be outside the repository (model files are never committed).
Needs numpy and gguf (the project's .venv has both).
"""
import os
import sys

import numpy as np

import gguf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_tinyllama import copy_tokenizer  # noqa: E402  (the same tokenizer.* copy)

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB_FILE = os.path.join(HERE, "..", "..", "..", "shared", "vocab", "ggml-vocab-llama-spm.gguf")
N_LAYER, N_EMBD, N_FF, N_HEAD, N_HEAD_KV, HEAD_DIM = 32, 4096, 14336, 32, 8, 128
Q4_0_BLOCK, Q4_0_BYTES = 32, 18


def tensors(n_vocab):
    kv = N_HEAD_KV * HEAD_DIM
    out = [("token_embd.weight", (n_vocab, N_EMBD))]
    for i in range(N_LAYER):
        p = f"blk.{i}."
        out += [(p + "attn_norm.weight", (N_EMBD,)), (p + "attn_q.weight", (N_EMBD, N_EMBD)),
                (p + "attn_k.weight", (kv, N_EMBD)), (p + "attn_v.weight", (kv, N_EMBD)),
                (p + "attn_output.weight", (N_EMBD, N_EMBD)), (p + "ffn_norm.weight", (N_EMBD,)),
                (p + "ffn_gate.weight", (N_FF, N_EMBD)), (p + "ffn_up.weight", (N_FF, N_EMBD)),
                (p + "ffn_down.weight", (N_EMBD, N_FF))]
    return out + [("output_norm.weight", (N_EMBD,)), ("output.weight", (n_vocab, N_EMBD))]


def q4_0_rows(rng, rows, cols):
    """rows x cols weights as Q4_0 blocks: uint8 [rows, cols / 32 * 18]."""
    blocks = cols // Q4_0_BLOCK
    data = rng.integers(0, 256, size=(rows, blocks, Q4_0_BYTES), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.01, size=(rows, blocks)).astype(np.float16)
    data[:, :, 0:2] = scales.view(np.uint8).reshape(rows, blocks, 2)
    return data.reshape(rows, blocks * Q4_0_BYTES)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    writer = gguf.GGUFWriter(out, "llama")
    writer.add_name("Llama-3-8B shape, random Q4_0 weights")
    writer.add_context_length(8192)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD_KV)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_rope_freq_base(500000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    n_vocab = copy_tokenizer(writer, VOCAB_FILE)
    writer.add_vocab_size(n_vocab)
    plan = tensors(n_vocab)
    for name, shape in plan:
        if len(shape) == 1:
            writer.add_tensor_info(name, shape, np.dtype(np.float32), shape[0] * 4)
        else:
            rows, cols = shape
            byte_shape = (rows, cols // Q4_0_BLOCK * Q4_0_BYTES)
            writer.add_tensor_info(name, byte_shape, np.dtype(np.uint8),
                                   byte_shape[0] * byte_shape[1],
                                   raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    rng = np.random.default_rng(0)
    for name, shape in plan:
        if len(shape) == 1:
            writer.write_tensor_data(np.ones(shape, dtype=np.float32))
        else:
            writer.write_tensor_data(q4_0_rows(rng, *shape))
    writer.close()
    print(f"{out}: {os.path.getsize(out) / 1e9:.2f} GB", file=sys.stderr)


if __name__ == "__main__":
    main()
