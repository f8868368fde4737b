"""Perplexity as llama.cpp's perplexity tool (tools/perplexity/perplexity.cpp) computes it,
through llama-cpp-python: the text is tokenized with BOS (when the model adds one), cut into
windows of n_ctx tokens, each window's first token replaced by BOS (when the model adds one),
and only the second half of each window scored (the logits at position j predict token j+1
for n_ctx/2 <= j < n_ctx-1). Writes a JSON fixture.

  python tests/reference/perplexity_fixture.py MODEL TEXT N_CTX OUT.json
"""
import json
import sys

import numpy as np
from llama_cpp import Llama


def main():
    model, text_path, n_ctx, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    text = open(text_path, encoding="utf-8").read()
    llm = Llama(model_path=model, n_ctx=n_ctx, n_batch=n_ctx, n_threads=2, logits_all=True,
                verbose=False, type_k=0, type_v=0, flash_attn=False)
    add_bos = llm._model.add_bos_token() if hasattr(llm._model, "add_bos_token") else True
    tokens = llm.tokenize(text.encode(), add_bos=add_bos, special=False)
    bos = llm.token_bos()
    nll, count = 0.0, 0
    for c in range(len(tokens) // n_ctx):
        window = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if add_bos:
            window[0] = bos
        llm = Llama(model_path=model, n_ctx=n_ctx, n_batch=n_ctx, n_threads=2, logits_all=True,
                    verbose=False, type_k=0, type_v=0, flash_attn=False)
        llm.eval(window)
        scores = np.array(llm.scores[:n_ctx], dtype=np.float64)
        for j in range(n_ctx // 2, n_ctx - 1):
            row = scores[j]
            m = row.max()
            nll += np.log(np.exp(row - m).sum()) - (row[tokens[c * n_ctx + j + 1]] - m)
            count += 1
    ppl = float(np.exp(nll / count))
    json.dump({"model": model.split("/")[-1], "text": text_path.split("/")[-1], "n_ctx": n_ctx,
               "n_tokens": len(tokens), "n_scored": count, "perplexity": ppl},
              open(out, "w"), indent=1)
    print(f"perplexity {ppl:.4f} over {count} tokens", file=sys.stderr)


if __name__ == "__main__":
    main()
