"""Side-by-side decode and prompt speed: ferry vs llama.cpp (llama-cpp-python), same GGUF file,
same thread count, same prompt and greedy settings, in one run. A benchmark, not a test.

  python tests/bench/vs_llama_cpp.py FERRY_BINARY MODEL.gguf [--threads 2] [--n 64]
      [--prompt-file tests/data/story.txt] [--prompt-chars 2000] [--num-ctx 1024]

--prompt-file replaces the short built-in prompt (a long prompt measures prefill: the first
--prompt-chars characters of tests/data/story.txt are ~500 Gemma 3 tokens).

Needs llama-cpp-python (pip install llama-cpp-python; it builds llama.cpp from source).
"""
import argparse
import re
import subprocess
import time

PROMPT = ("Once upon a time, in a small village by the sea, there lived an old fisherman who "
          "every morning walked down to the harbour to look at the boats. One day he saw")


def bench_ferry(binary, model, threads, n, prompt, n_ctx):
    out = subprocess.run([binary, "run", model, prompt, "--raw", "--temperature", "0",
                          "--num-predict", str(n), "--num-thread", str(threads), "--verbose",
                          "--num-ctx", str(n_ctx)], capture_output=True, text=True, check=True)
    p = re.search(r"prompt: (\d+) tokens in ([\d.]+) s", out.stderr)
    g = re.search(r"generation: (\d+) tokens in ([\d.]+) s", out.stderr)
    return int(p[1]) / float(p[2]), int(g[1]) / float(g[2])


def bench_llama_cpp(model, threads, n, prompt, n_ctx):
    from llama_cpp import Llama
    llm = Llama(model_path=model, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                n_batch=n_ctx, n_ubatch=n_ctx, verbose=False)
    tokens = llm.tokenize(prompt.encode(), add_bos=True)
    t0 = time.perf_counter()
    llm.eval(tokens)
    t1 = time.perf_counter()
    produced = 0
    for _ in range(n):
        tok = llm.sample(temp=0.0)
        llm.eval([tok])
        produced += 1
    t2 = time.perf_counter()
    return len(tokens) / (t1 - t0), produced / (t2 - t1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ferry")
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--prompt-file", help="prompt text instead of the short built-in one")
    ap.add_argument("--prompt-chars", type=int, default=0, help="use only this many characters")
    ap.add_argument("--num-ctx", type=int, default=1024)
    a = ap.parse_args()
    prompt = PROMPT
    if a.prompt_file:
        with open(a.prompt_file, encoding="utf-8") as f:
            prompt = f.read()
    if a.prompt_chars > 0:
        prompt = prompt[:a.prompt_chars]
    rows = []
    for _ in range(a.repeat):
        rows.append(("ferry",) + bench_ferry(a.ferry, a.model, a.threads, a.n, prompt, a.num_ctx))
        rows.append(("llama.cpp",) + bench_llama_cpp(a.model, a.threads, a.n, prompt, a.num_ctx))
    for engine in ["ferry", "llama.cpp"]:
        r = [x for x in rows if x[0] == engine]
        best_p = max(x[1] for x in r)
        best_g = max(x[2] for x in r)
        print(f"{engine:10s} prompt {best_p:8.1f} tok/s   decode {best_g:7.1f} tok/s   "
              f"(best of {a.repeat}, {a.threads} threads)")


if __name__ == "__main__":
    main()
