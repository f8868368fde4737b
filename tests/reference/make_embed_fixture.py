"""Reference harness for embeddings: llama.cpp (through llama-cpp-python) embeds texts with
mean pooling and L2 normalization, what ferry's /api/embed returns for a model whose GGUF sets no
pooling type, and writes a JSON fixture that tests/test_embed.py compares ferry against.

llama.cpp settings: CPU, f16 KV cache (ferry serve's default), no flash attention, one context
per text. The fixture also records each text's token ids, so a tokenizer difference shows as one.

  python tests/reference/make_embed_fixture.py MODEL.gguf OUT.json --text "..." --text "..."
"""
import argparse
import json


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--text", action="append", required=True)
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", required=True, help="the model name ferry serves it under")
    args = ap.parse_args()
    import llama_cpp
    from llama_cpp import Llama
    cases = []
    for text in args.text:
        llm = Llama(model_path=args.model, n_ctx=args.n_ctx, n_batch=args.n_ctx,
                    n_ubatch=args.n_ctx, n_threads=args.threads, embedding=True,
                    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, flash_attn=False,
                    verbose=False)
        tokens = llm.tokenize(text.encode("utf-8"))  # BOS as the model's flags say
        vec = llm.embed(text, normalize=True)
        cases.append({"text": text, "tokens": tokens, "embedding": [float(x) for x in vec]})
        del llm
    fixture = {
        "model": args.name,
        "settings": {"pooling": "mean", "normalize": True, "n_ctx": args.n_ctx,
                     "llama_cpp_python": llama_cpp.__version__},
        "cases": cases,
    }
    with open(args.out, "w") as f:
        json.dump(fixture, f, indent=None, separators=(",", ":"))
        f.write("\n")


if __name__ == "__main__":
    main()
