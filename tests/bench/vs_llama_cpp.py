"""Side-by-side prompt (pp) and generation (tg) speed: ferry vs llama.cpp (llama-cpp-python),
same GGUF file, same threads, in one run; each engine in its own process, one after the other.
A benchmark, not a test.

  python tests/bench/vs_llama_cpp.py FERRY_BINARY MODEL.gguf [MODEL2.gguf ...]
      [--threads 2] [-p 512] [-n 128] [-r 3] [-d 0] [--kv-type f16] [--flash-attn off]

Both engines measure what llama-bench does:
- pp: one prompt of -p tokens evaluated in one batch;
- tg: -n tokens generated one at a time after a one-token prompt;
both with -d tokens already in the KV cache (llama-bench's -d; 0: from an empty context).
ferry: `ferry bench MODEL -p P -n N -r R -d D --kv-type K --num-thread T --json` (its own
timings, a warm-up run first; the depth prefix is evaluated once per load and reused).
llama.cpp: the depth prefix is evaluated once (untimed) and every timed run starts from it
(`n_tokens` set back to the depth: llama-cpp-python's eval drops the cache beyond it); the eval
calls alone are timed (llama-bench's way; no Python sampling in the loop: each generated token
is fed back as a fixed id, which does not change the work), after a warm-up run.
--flash-attn off|on|best: llama.cpp's flash attention; best runs both and keeps the faster
figure of each (for long contexts, where flash attention usually wins). A quantized V cache
needs flash attention in llama.cpp (best then means on). Prompts are token ids drawn with a
fixed seed in both. Reported: the median of -r runs per engine and the ratio ferry / llama.cpp
(> 1: ferry is faster).
"""
import argparse
import json
import statistics
import subprocess
import sys
import time


KV_TYPES = {"f16": 1, "q8_0": 8}  # ggml type ids


def llama_cpp_worker(model, threads, n_prompt, n_gen, reps, depth, kv_type, flash):
    import random

    from llama_cpp import Llama
    n_batch = max(n_prompt, 512)
    llm = Llama(model_path=model, n_ctx=depth + max(n_prompt, n_gen + 1) + 16,
                n_threads=threads, n_threads_batch=threads, n_batch=n_batch, n_ubatch=n_batch,
                flash_attn=flash, type_k=KV_TYPES[kv_type], type_v=KV_TYPES[kv_type],
                verbose=False)
    rng = random.Random(1)
    vocab = llm.n_vocab()
    llm.reset()
    if depth > 0:
        llm.eval([rng.randrange(100, vocab - 100) for _ in range(depth)])  # untimed
    pp, tg = [], []
    for rep in range(reps + 1):  # the first run is a warm-up
        prompt = [rng.randrange(100, vocab - 100) for _ in range(n_prompt)]
        llm.n_tokens = depth
        t0 = time.perf_counter()
        llm.eval(prompt)
        pp_rate = n_prompt / (time.perf_counter() - t0)
        llm.n_tokens = depth
        llm.eval([prompt[0]])
        spent = 0.0
        for i in range(n_gen):
            t0 = time.perf_counter()
            llm.eval([prompt[(i + 1) % n_prompt]])
            spent += time.perf_counter() - t0
        if rep > 0:
            pp.append(pp_rate)
            tg.append(n_gen / spent)
    print(json.dumps({"pp": pp, "tg": tg}))


def run_ferry(binary, model, threads, n_prompt, n_gen, reps, depth, kv_type):
    out = subprocess.run([binary, "bench", model, "-p", str(n_prompt), "-n", str(n_gen),
                          "-r", str(reps), "-d", str(depth), "--kv-type", kv_type,
                          "--num-thread", str(threads), "--json"],
                         capture_output=True, text=True, check=True)
    row = json.loads(out.stdout)[0]
    return row["pp_tok_s"], row["tg_tok_s"]


def run_llama_cpp(model, threads, n_prompt, n_gen, reps, depth, kv_type, flash):
    """Medians of pp and tg; flash "best" runs both settings and keeps the faster of each."""
    settings = {"off": ["off"], "on": ["on"], "best": ["off", "on"]}[flash]
    if kv_type != "f16":
        settings = ["on"]  # llama.cpp needs flash attention for a quantized V cache
    best_pp, best_tg = 0.0, 0.0
    for fa in settings:
        out = subprocess.run([sys.executable, __file__, "--llama-cpp-worker", model,
                              "--threads", str(threads), "-p", str(n_prompt), "-n", str(n_gen),
                              "-r", str(reps), "-d", str(depth), "--kv-type", kv_type,
                              "--flash-attn", fa],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        best_pp = max(best_pp, statistics.median(r["pp"]))
        best_tg = max(best_tg, statistics.median(r["tg"]))
    return best_pp, best_tg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ferry", nargs="?")
    ap.add_argument("models", nargs="*")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-p", type=int, default=512)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("-d", type=int, default=0, help="tokens already in the KV cache")
    ap.add_argument("--kv-type", choices=sorted(KV_TYPES), default="f16")
    ap.add_argument("--flash-attn", choices=["off", "on", "best"], default="off")
    ap.add_argument("--llama-cpp-worker", metavar="MODEL")
    args = ap.parse_args()
    if args.llama_cpp_worker:
        llama_cpp_worker(args.llama_cpp_worker, args.threads, args.p, args.n, args.r, args.d,
                         args.kv_type, args.flash_attn == "on")
        return
    print(f"threads {args.threads}, pp{args.p}, tg{args.n}, depth {args.d}, kv {args.kv_type}, "
          f"llama.cpp flash attention {args.flash_attn}; ferry: mean of {args.r} runs "
          f"(ferry bench), llama.cpp: median of {args.r}; tok/s")
    print("| model | ferry pp | llama.cpp pp | ratio | ferry tg | llama.cpp tg | ratio |")
    print("|---|---|---|---|---|---|---|")
    for model in args.models:
        f_pp, f_tg = run_ferry(args.ferry, model, args.threads, args.p, args.n, args.r, args.d,
                               args.kv_type)
        print(f"ferry {model.split('/')[-1]}: pp {f_pp:.1f}, tg {f_tg:.1f} tok/s; llama.cpp next",
              file=sys.stderr, flush=True)
        l_pp, l_tg = run_llama_cpp(model, args.threads, args.p, args.n, args.r, args.d,
                                   args.kv_type, args.flash_attn)
        print(f"| {model.split('/')[-1]} | {f_pp:.1f} | {l_pp:.1f} | {f_pp / l_pp:.2f} | "
              f"{f_tg:.1f} | {l_tg:.1f} | {f_tg / l_tg:.2f} |", flush=True)


if __name__ == "__main__":
    main()
