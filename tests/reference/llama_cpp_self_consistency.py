"""llama.cpp against itself: the fixture procedure of make_fixtures.py (greedy 64, f32 KV cache,
no flash attention, 2 threads) run twice per prompt, with the prompt evaluated in one batch
(n_batch 512, as the fixtures are made) and token by token (n_batch 1). Both runs are llama.cpp;
only the float summation order of the prompt's kernels differs. It shows how far rounding noise
alone moves llama.cpp's own logits and greedy tokens for each weight type: the floor under any
comparison of ferry with llama.cpp (see README.md here, "Greedy divergence").

  python tests/reference/llama_cpp_self_consistency.py FIXTURE.json MODEL.gguf [FIXTURE MODEL ...]

The prompts are the fixture's. Needs llama-cpp-python. A measurement, not a test.
"""
import json
import os
import sys

import numpy as np
from llama_cpp import Llama

def greedy(model, prompt, n_batch, n=64, n_ctx=512):
    llm = Llama(model_path=model, n_ctx=n_ctx, n_batch=n_batch, n_threads=2, logits_all=True,
                verbose=False, type_k=0, type_v=0, flash_attn=False, seed=0)
    llm.eval(prompt)
    toks, gaps, firsts = [], [], []
    for step in range(n):
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        order = np.argsort(-logits, kind="stable")
        gaps.append(float(logits[order[0]] - logits[order[1]]))
        if step < 8: firsts.append(logits.copy())
        t = int(order[0]); toks.append(t)
        if llm.n_tokens + 1 >= n_ctx: break
        llm.eval([t])
    return toks, gaps, firsts

for fixture, model in [(f, m) for f, m in zip(sys.argv[1::2], sys.argv[2::2])]:
    cases = json.load(open(fixture))["cases"]
    for ci, case in enumerate(cases):
        prompt = case["prompt"]
        a, ga, fa = greedy(model, prompt, 512)
        b, gb, fb = greedy(model, prompt, 1)
        div = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), None)
        # logits difference at the prompt's last position (same context in both runs)
        d0 = float(np.max(np.abs(fa[0] - fb[0])))
        scale = float(np.max(np.abs(fa[0])))
        msg = f"{os.path.basename(model)} case {ci} ({len(prompt)} prompt tokens): max |dlogit| at the prompt's last position {d0:.3g} (logits up to {scale:.3g})"
        if div is None:
            msg += "; greedy identical"
        else:
            msg += f"; greedy diverges at step {div}, where the n_batch-512 top-2 gap is {ga[div]:.3g}"
        print(msg, flush=True)
