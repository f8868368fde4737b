"""Embeddings end to end: `ferry serve`'s /api/embed, /api/embeddings and /v1/embeddings, driven
by the PyPI `ollama` and `openai` packages, against llama.cpp's embeddings of the same texts
(fixtures/embed-*.json, written by tests/reference/make_embed_fixture.py: mean pooling, L2
normalized, f16 KV cache).

Tolerances, about twice the worst seen over the fixture's texts (the test prints them):
- stories260K (F32 weights, f16 KV): only summation order and the f16 cache differ; measured
  worst cosine 1.000000, worst component difference 1.9e-4; bound 0.99999 and 5e-4.
- the default model (Q4_K_M): wherever llama.cpp rounds activations (Q8_0/Q8_K before quantized
  matmuls, f16 for gemma3's GELU table) a value at a rounding boundary can go either way (see
  SyntheticTolerance in src/model/model_test.cc), and the hidden states carry that noise;
  measured worst cosine 0.99945, worst component difference 8.8e-3; bound 0.998 and 0.02.
"""
import base64
import json
import math
import struct
from pathlib import Path

import ollama
import openai
import pytest

from conftest import DEFAULT_MODEL, SHARED
from test_serve import GEMMA, STORIES, Serve

FIXTURES = Path(__file__).resolve().parent / "reference" / "fixtures"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("embed-models")
    (d / f"{STORIES}.gguf").symlink_to(SHARED / "models" / "stories260K.gguf")
    if DEFAULT_MODEL.exists():
        (d / f"{GEMMA}.gguf").symlink_to(DEFAULT_MODEL)
    s = Serve(d)
    yield s
    s.stop()


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


def norm(v):
    return math.sqrt(sum(x * x for x in v))


TOLERANCE = {STORIES: (0.99999, 5e-4), GEMMA: (0.998, 0.02)}  # (min cosine, max |difference|)


@pytest.mark.parametrize("name", [STORIES, GEMMA])
def test_matches_llama_cpp(server, name):
    if name == GEMMA and not DEFAULT_MODEL.exists():
        pytest.skip("the default model is not fetched")
    fixture = json.loads((FIXTURES / f"embed-{name}.json").read_text())
    worst_cos, worst_abs = 1.0, 0.0
    for case in fixture["cases"]:
        r = server.client.embed(model=name, input=case["text"])
        got, want = r.embeddings[0], case["embedding"]
        assert len(got) == len(want)
        assert r.prompt_eval_count == len(case["tokens"])  # the same tokens, BOS included
        assert abs(norm(got) - 1.0) < 1e-5
        c = cosine(got, want)
        d = max(abs(x - y) for x, y in zip(got, want))
        worst_cos, worst_abs = min(worst_cos, c), max(worst_abs, d)
        min_cos, max_diff = TOLERANCE[name]
        assert c >= min_cos and d <= max_diff, (case["text"], c, d)
    print(f"{name}: worst cosine {worst_cos:.6f}, worst component difference {worst_abs:.2e}")


def test_endpoints_agree(server):
    texts = ["Once upon a time", "The cat sat on the mat.", "A"]
    batch = server.client.embed(model=STORIES, input=texts)
    assert len(batch.embeddings) == 3 and batch.prompt_eval_count > 3
    # Several inputs in one request: each is the vector it gets alone, bit for bit.
    for t, v in zip(texts, batch.embeddings):
        assert server.client.embed(model=STORIES, input=t).embeddings[0] == v
    # The older endpoint: the same direction, not normalized.
    old = server.client.embeddings(model=STORIES, prompt=texts[0]).embedding
    assert abs(norm(old) - 1.0) > 1e-3
    assert max(abs(x / norm(old) - y) for x, y in zip(old, batch.embeddings[0])) < 1e-6
    # dimensions: the leading values, normalized again.
    short = server.client.embed(model=STORIES, input=texts[0], dimensions=16).embeddings[0]
    head = batch.embeddings[0][:16]
    assert len(short) == 16
    assert max(abs(x - y / norm(head)) for x, y in zip(short, head)) < 1e-6
    # OpenAI's endpoint, through the openai package (which asks for base64 and decodes it).
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="x")
    r = client.embeddings.create(model=STORIES, input=texts)
    assert [d.index for d in r.data] == [0, 1, 2]
    for d, v in zip(r.data, batch.embeddings):
        assert max(abs(x - y) for x, y in zip(d.embedding, v)) < 1e-7
    assert r.usage.prompt_tokens == batch.prompt_eval_count
    # encoding_format float, as plain JSON.
    status, text = server.post("/v1/embeddings", {"model": STORIES, "input": texts[0],
                                                  "encoding_format": "float"})
    assert status == 200
    assert json.loads(text)["data"][0]["embedding"] == batch.embeddings[0]
    # encoding_format base64: the little-endian f32 bytes.
    status, text = server.post("/v1/embeddings", {"model": STORIES, "input": texts[0],
                                                  "encoding_format": "base64"})
    assert status == 200
    raw = base64.b64decode(json.loads(text)["data"][0]["embedding"])
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == batch.embeddings[0]


def test_embed_errors_and_truncate(server):
    long_text = "once upon a time there was a cat " * 40
    opts = {"num_ctx": 32}
    # Ollama's default truncate is true: the first num_ctx tokens are embedded.
    r = server.client.embed(model=STORIES, input=long_text, options=opts)
    assert r.prompt_eval_count == 32
    status, text = server.post("/api/embed", {"model": STORIES, "input": long_text,
                                              "truncate": False, "options": opts})
    msg = json.loads(text)["error"]
    assert status == 400 and "num_ctx 32" in msg and "truncate" in msg, msg
    for body, field in [({"model": STORIES}, "input"),
                        ({"model": STORIES, "input": 3}, "input"),
                        ({"model": STORIES, "input": []}, "input"),
                        ({"model": STORIES, "input": "x", "dimensions": 0}, "dimensions"),
                        ({"model": STORIES, "input": "x", "dimensions": 100000}, "dimensions")]:
        status, text = server.post("/api/embed", body)
        assert status == 400 and field in json.loads(text)["error"], (body, text)
    status, text = server.post("/api/embed", {"model": "nope", "input": "x"})
    assert status == 404
    status, text = server.post("/v1/embeddings", {"model": STORIES, "input": [[1, 2, 3]]})
    assert status == 400 and "token arrays" in json.loads(text)["error"]["message"]
    status, text = server.post("/v1/embeddings", {"model": STORIES, "input": "x",
                                                  "encoding_format": "hex"})
    assert status == 400 and "encoding_format" in json.loads(text)["error"]["message"]
    with pytest.raises(ollama.ResponseError) as e:
        server.client.embed(model="nope", input="x")
    assert e.value.status_code == 404
