"""`ferry show`: the description of a model, checked against values computed from the file
with the `gguf` package."""
import json

import pytest
from gguf import GGUFReader, LlamaFileType

from conftest import all_model_files, run


def field(reader, key, default=None):
    f = reader.fields.get(key)
    return f.contents() if f is not None else default


def row_bytes(n, block, size):
    return None if n % block else n // block * size


@pytest.mark.parametrize("path", all_model_files(), ids=lambda p: p.name)
def test_show_json_matches_file(ferry, path):
    info = json.loads(run([ferry, "show", "--json", path]).stdout)
    r = GGUFReader(path)
    arch = field(r, "general.architecture")
    assert info["architecture"] == arch
    for key in ["block_count", "embedding_length", "context_length"]:
        assert info[key] == field(r, f"{arch}.{key}"), key
    n_head = field(r, f"{arch}.attention.head_count")
    assert info["head_count"] == n_head
    n_kv = field(r, f"{arch}.attention.head_count_kv", n_head)
    assert info["head_count_kv"] == n_kv
    tokens = field(r, "tokenizer.ggml.tokens")
    assert info["vocab_size"] == (len(tokens) if tokens is not None else None)
    assert info["parameter_count"] == sum(int(t.n_elements) for t in r.tensors)
    assert info["tensor_bytes"] == sum(int(t.n_bytes) for t in r.tensors)
    ft = field(r, "general.file_type")
    assert info["file_type"] == ft
    if ft is not None:
        assert "MOSTLY_" + info["file_type_name"] == LlamaFileType(ft).name or (
            info["file_type_name"] == "F32" and ft == 0)
    assert info["chat_template"] == ("tokenizer.chat_template" in r.fields)
    # KV cache bytes per token, computed independently.
    n_layer = info["block_count"]
    n_embd = info["embedding_length"]
    if n_head and n_layer and n_embd:
        dk = field(r, f"{arch}.attention.key_length", n_embd // n_head)
        dv = field(r, f"{arch}.attention.value_length", n_embd // n_head)
        for name, block, size in [("f16", 1, 2), ("q8_0", 32, 34), ("q4_0", 32, 18)]:
            k, v = row_bytes(n_kv * dk, block, size), row_bytes(n_kv * dv, block, size)
            want = None if k is None or v is None else n_layer * (k + v)
            assert info["kv_bytes_per_token"][name] == want, name


def test_show_default_model(ferry, default_model):
    info = json.loads(run([ferry, "show", "--json", default_model]).stdout)
    assert info["architecture"] == "gemma3"
    assert info["block_count"] == 18
    assert info["head_count_kv"] == 1
    assert info["key_length"] == 256
    assert info["sliding_window"] == 512
    # 18 layers x (K + V) x 1 head x 256 x 2 bytes
    assert info["kv_bytes_per_token"] == {"f16": 18432, "q8_0": 9792, "q4_0": 5184}
    assert info["file_type_name"] == "Q4_K_M"
    text = run([ferry, "show", default_model]).stdout
    for needle in ["gemma3", "Q4_K_M", "KV cache per token", "q6_K", "262144 tokens"]:
        assert needle in text
    tensors = run([ferry, "show", "--tensors", default_model]).stdout
    assert "token_embd.weight" in tensors and "blk.17.ffn_down.weight" in tensors


def test_show_by_name_from_models_folder(ferry, default_model):
    env = {"FERRY_MODELS": str(default_model.parent), "HOME": "/nonexistent"}
    info = json.loads(run([ferry, "show", "--json", "gemma-3-270m-q4_k_m"], env=env).stdout)
    assert info["architecture"] == "gemma3"
