#!/usr/bin/env python3
"""Soak test for `ferry serve`: many concurrent clients for minutes, a mix of good, cancelled
and malformed requests. Not a CI test (it runs for minutes); its figures go into closing notes.

    .venv/bin/python tests/soak/soak.py build/bin/ferry [--clients 16] [--minutes 10]

Models: stories260K and llama-2-tiny-random from ../shared/models (two models, so loads,
unloads and switches happen), served with FERRY_NUM_PARALLEL=4 and FERRY_MAX_LOADED_MODELS=3.

Each client loops over a weighted mix:
  generate (streamed and not), chat, embed, OpenAI chat completions, a streamed generate that
  the client abandons after its first line (a disconnect), and malformed requests (bad JSON,
  unknown model, absurd options, a wrong type).
It checks: no 5xx answer, no connection refused/reset by the server, every well-formed request
answered in full (200 with done: true, or its documented 4xx), and the server's RSS after the
run equal to the RSS after a warm-up (both read with the server idle) within 2%.
Exit 0 when every check holds; prints one summary line per check.
"""
import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "models"
MODELS = {"stories": SHARED / "stories260K.gguf", "tiny": SHARED / "llama-2-tiny-random.gguf"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Client:
    def __init__(self, port, stats, lock, seed):
        self.port = port
        self.stats = stats
        self.lock = lock
        self.rng = random.Random(seed)

    def count(self, key):
        with self.lock:
            self.stats[key] += 1

    def request(self, path, body, raw=None, abandon=False):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        data = raw if raw is not None else json.dumps(body)
        conn.request("POST", path, body=data, headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        if abandon:
            r.readline()
            conn.close()  # disconnect mid-stream
            return r.status, ""
        text = r.read().decode()
        conn.close()
        return r.status, text

    def check(self, kind, status, text, want_ok):
        if status >= 500:
            self.count("server_errors")
            print(f"5xx on {kind}: {status} {text[:200]}", file=sys.stderr)
        elif want_ok and status != 200:
            self.count("unanswered")
            print(f"{kind}: {status} {text[:200]}", file=sys.stderr)
        elif not want_ok and status < 400:
            self.count("bad_accepted")
            print(f"malformed {kind} accepted: {status} {text[:200]}", file=sys.stderr)
        else:
            self.count(f"ok_{kind}")

    def one(self):
        model = self.rng.choice(list(MODELS))
        opts = {"num_predict": self.rng.randint(1, 24), "temperature": self.rng.choice([0, 0.8])}
        kind = self.rng.choices(
            ["generate", "generate_stream", "chat", "embed", "openai", "abandon", "malformed"],
            weights=[3, 3, 2, 2, 1, 1, 2])[0]
        if kind == "generate":
            s, t = self.request("/api/generate", {"model": model, "prompt": "Once upon a time",
                                                  "stream": False, "options": opts})
            ok = s == 200 and json.loads(t).get("done") is True
            self.check(kind, s if ok or s != 200 else 599, t, True)
        elif kind == "generate_stream":
            s, t = self.request("/api/generate", {"model": model, "prompt": "A cat",
                                                  "options": opts})
            # NDJSON: split at "\n" only (str.splitlines also splits at U+2028, U+0085 ...,
            # which a model may generate and JSON carries unescaped).
            lines = [json.loads(x) for x in t.split("\n") if x.strip()]
            ok = s == 200 and lines and lines[-1].get("done") is True
            self.check(kind, s if ok or s != 200 else 599, t, True)
        elif kind == "chat":
            s, t = self.request("/api/chat", {"model": model, "stream": False, "options": opts,
                                              "messages": [{"role": "user", "content": "Hi"}]})
            self.check(kind, s, t, True)
        elif kind == "embed":
            s, t = self.request("/api/embed", {"model": model, "input": ["one", "two words"]})
            ok = s == 200 and len(json.loads(t)["embeddings"]) == 2
            self.check(kind, s if ok or s != 200 else 599, t, True)
        elif kind == "openai":
            s, t = self.request("/v1/chat/completions", {
                "model": model, "max_tokens": opts["num_predict"],
                "messages": [{"role": "user", "content": "Hello"}]})
            self.check(kind, s, t, True)
        elif kind == "abandon":
            s, _ = self.request("/api/generate", {"model": model, "prompt": "Long ago",
                                                  "options": {"num_predict": 200}}, abandon=True)
            self.check(kind, s, "", True)
        else:
            bad = self.rng.choice([
                ("/api/generate", None, '{"model": "stories", "prompt": '),
                ("/api/generate", {"model": "no-such-model", "prompt": "x"}, None),
                ("/api/generate", {"model": model, "prompt": "x",
                                   "options": {"num_ctx": -5}}, None),
                ("/api/chat", {"model": model, "messages": "not a list"}, None),
                ("/api/embed", {"model": model, "input": 42}, None),
                ("/api/generate", {"model": model, "prompt": "x",
                                   "options": {"temperature": "hot"}}, None),
            ])
            s, t = self.request(bad[0], bad[1], raw=bad[2])
            self.check("malformed", s, t, False)

    def loop(self, until):
        while time.monotonic() < until:
            try:
                self.one()
            except (ConnectionError, http.client.HTTPException, OSError) as e:
                self.count("connection_errors")
                print(f"connection error: {e!r}", file=sys.stderr)
            except (ValueError, KeyError) as e:  # an answer that is not the JSON it should be
                self.count("server_errors")
                print(f"malformed answer: {e!r}", file=sys.stderr)


def wait_idle(port, timeout=60):
    """Waits until no request runs (the /metrics gauges read 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        text = conn.getresponse().read().decode()
        conn.close()
        running = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith("ferry_requests_running"))
        if running == 0:
            time.sleep(1.0)
            return
        time.sleep(0.2)


def run_clients(port, n, seconds, stats, lock, seed):
    until = time.monotonic() + seconds
    clients = [Client(port, stats, lock, seed * 1000 + i) for i in range(n)]
    threads = [threading.Thread(target=c.loop, args=(until,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ferry")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup-seconds", type=float, default=60.0)
    args = ap.parse_args()

    models = Path(tempfile.mkdtemp(prefix="ferry-soak-"))
    for name, path in MODELS.items():
        (models / f"{name}.gguf").symlink_to(path)
    port = free_port()
    env = dict(os.environ, FERRY_HOST=f"127.0.0.1:{port}", FERRY_MODELS=str(models),
               FERRY_NUM_PARALLEL="4", FERRY_MAX_LOADED_MODELS="3", FERRY_KEEP_ALIVE="-1")
    log = open(models / "serve.log", "w+")
    server = subprocess.Popen([args.ferry, "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"ferry serve did not start; log: {models / 'serve.log'}")
            time.sleep(0.1)

    stats, lock = Counter(), threading.Lock()
    run_clients(port, args.clients, args.warmup_seconds, stats, lock, seed=1)
    wait_idle(port)
    rss_before = rss_bytes(server.pid)
    start = time.monotonic()
    samples = []  # (minute, RSS) while the clients run: a leak grows steadily, a high-water
    stop_sampling = threading.Event()  # mark levels off

    def sample():
        while not stop_sampling.wait(60.0):
            samples.append(((time.monotonic() - start) / 60, rss_bytes(server.pid)))
    sampler = threading.Thread(target=sample)
    sampler.start()
    run_clients(port, args.clients, args.minutes * 60, stats, lock, seed=2)
    stop_sampling.set()
    sampler.join()
    elapsed = time.monotonic() - start
    wait_idle(port)
    rss_after = rss_bytes(server.pid)
    alive = server.poll() is None
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)

    answered = sum(v for k, v in stats.items() if k.startswith("ok_"))
    drift = (rss_after - rss_before) / rss_before if rss_before else 1.0
    print(f"soak: {args.clients} clients, {elapsed / 60:.1f} min (after a "
          f"{args.warmup_seconds:.0f} s warm-up), {answered} requests answered as expected")
    print("RSS under load, per minute (MiB): " +
          ", ".join(f"{m:.0f}: {r / 2**20:.1f}" for m, r in samples))
    print("by kind: " + ", ".join(f"{k[3:]} {v}" for k, v in sorted(stats.items())
                                  if k.startswith("ok_")))
    checks = {
        "server alive": alive,
        "0 server errors (5xx)": stats["server_errors"] == 0,
        "0 connection errors": stats["connection_errors"] == 0,
        "every well-formed request answered": stats["unanswered"] == 0,
        "every malformed request refused (4xx)": stats["bad_accepted"] == 0,
        f"RSS after {rss_after / 2**20:.1f} MiB vs before {rss_before / 2**20:.1f} MiB "
        f"({100 * drift:+.2f}%) within 2%": abs(drift) <= 0.02,
    }
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'} {name}")
    print(f"server log: {models / 'serve.log'}")
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
