"""Reference harness: runs llama.cpp (through the PyPI package llama-cpp-python) on a model and
writes a small JSON fixture that ferry's tests compare against.

For each prompt (token ids, so the fixture does not depend on a tokenizer): the greedy
continuation of N tokens, the gap between the top-2 logits at every greedy step (a divergence is
allowed only after a step whose gap is below 1e-3), and the top-10 (id, logit) at the first 8
positions of the continuation (the prompt's last position, then each greedy step).

llama.cpp settings: CPU, n_threads as given, f32 KV cache and no flash attention, so that its
attention runs in f32 like ferry's reference forward pass.

  python tests/reference/make_fixtures.py MODEL.gguf OUT.json --prompt 1,403,407 --prompt 1 ...
"""
import argparse
import json
import sys

import numpy as np


def run(model_path, prompts, n_predict, n_top, n_positions, n_ctx, threads):
    from llama_cpp import Llama
    results = []
    for prompt in prompts:
        # A fresh context per prompt: llama.cpp keeps KV cells across reset().
        llm = Llama(model_path=str(model_path), n_ctx=n_ctx, n_batch=512, n_threads=threads,
                    logits_all=True, verbose=False, type_k=0, type_v=0, flash_attn=False, seed=0)
        llm.eval(prompt)
        greedy, gaps, tops = [], [], []
        for step in range(n_predict):
            logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            order = np.argsort(-logits, kind="stable")
            gaps.append(float(logits[order[0]] - logits[order[1]]))
            if step < n_positions:
                tops.append([[int(i), float(logits[i])] for i in order[:n_top]])
            tok = int(order[0])
            greedy.append(tok)
            if llm.n_tokens + 1 >= n_ctx:
                break
            llm.eval([tok])
        results.append({"prompt": prompt, "greedy": greedy, "top2_gap": gaps, "top": tops})
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("out")
    ap.add_argument("--prompt", action="append", default=[],
                    help="comma-separated token ids; repeat for several prompts")
    ap.add_argument("--text", action="append", default=[],
                    help="a text that llama.cpp tokenizes (BOS added per the model's flags)")
    ap.add_argument("--n-predict", type=int, default=64)
    ap.add_argument("--n-ctx", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default=None, help="model name recorded in the fixture")
    args = ap.parse_args()
    prompts = [[int(t) for t in p.split(",") if t] for p in args.prompt]
    if args.text:
        from llama_cpp import Llama
        tok = Llama(model_path=args.model, vocab_only=True, verbose=False)
        prompts += [tok.tokenize(t.encode(), add_bos=True, special=False) for t in args.text]
    if not prompts:
        ap.error("give at least one --prompt or --text")
    import llama_cpp
    fixture = {
        "model": args.name or args.model,
        "reference": f"llama-cpp-python {llama_cpp.__version__}",
        "settings": {"n_ctx": args.n_ctx, "kv_type": "f32", "flash_attn": False,
                     "threads": args.threads},
        "cases": run(args.model, prompts, args.n_predict, 10, 8, args.n_ctx, args.threads),
    }
    with open(args.out, "w") as f:
        json.dump(fixture, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {args.out}: {len(prompts)} prompts", file=sys.stderr)


if __name__ == "__main__":
    main()
