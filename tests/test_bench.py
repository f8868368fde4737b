"""`ferry bench`: the JSON rows, the table and bad flags (structure only, no speed thresholds)."""
import json

from conftest import SHARED, run

STORIES = SHARED / "models" / "stories260K.gguf"
KEYS = ["parallel", "depth", "n_prompt", "n_gen", "threads", "kv_type", "pp_tok_s", "pp_sd",
        "tg_tok_s", "tg_sd", "kv_bytes", "compute_bytes", "rss_bytes", "predicted_tg_tok_s",
        "num_gpu", "gpu_layers", "processor", "gpu_planned_bytes", "gpu_allocated_bytes",
        "gpu_free_drop_bytes"]


def test_bench_json_has_one_row_per_parallel_value(ferry):
    proc = run([ferry, "bench", STORIES, "-p", "16", "-n", "8", "-r", "2", "--parallel", "1,2",
                "--num-thread", "1", "--json"])
    rows = json.loads(proc.stdout)
    assert isinstance(rows, list) and len(rows) == 2
    assert [r["parallel"] for r in rows] == [1, 2]
    for r in rows:
        assert list(r.keys()) == KEYS
        assert r["n_prompt"] == 16 and r["n_gen"] == 8
        assert r["threads"] == 1 and r["kv_type"] == "f16"
        assert r["pp_tok_s"] > 0 and r["tg_tok_s"] > 0
        assert r["pp_sd"] >= 0 and r["tg_sd"] >= 0


def test_bench_table_has_pp_and_tg_rows(ferry):
    out = run([ferry, "bench", STORIES, "-p", "8,16", "-n", "4", "-r", "1", "--num-thread",
               "1", "--kv-type", "q8_0"]).stdout
    lines = out.splitlines()
    assert lines[0].startswith("| model") and "t/s" in lines[0]
    tests = [line.split("|")[6].strip() for line in lines[2:]]
    assert tests == ["pp8", "pp16", "tg4"]
    assert "kv mem" in lines[0] and "plan t/s" in lines[0]
    assert all("stories260K" in line and "q8_0" in line and "±" in line for line in lines[2:])


def test_bench_rejects_bad_flags(ferry):
    proc = run([ferry, "bench", STORIES, "--parallel", "0", "-p", "8", "-n", "2", "-r", "1"],
               check=False)
    assert proc.returncode != 0
    assert "--parallel" in proc.stderr and "got 0" in proc.stderr
    proc = run([ferry, "bench", STORIES, "--kv-type", "q5_9", "-p", "8", "-n", "2"], check=False)
    assert proc.returncode != 0 and "q5_9" in proc.stderr


def plan_json(ferry, *args):
    return json.loads(run([ferry, "plan", STORIES, "--json", "--num-thread", "1",
                           *args]).stdout)["plan"]


def test_bench_depths_reuse_the_prefix_and_report_the_plan(ferry):
    # -d: a load per depth, pp and tg after that many cached tokens (bench checks that each
    # timed prompt reused exactly the depth's prefix and fails otherwise).
    proc = run([ferry, "bench", STORIES, "-p", "16", "-n", "8", "-r", "1", "-d", "0,64",
                "--parallel", "1,2", "--num-thread", "1", "--json"])
    rows = json.loads(proc.stdout)
    assert [(r["parallel"], r["depth"]) for r in rows] == [(1, 0), (1, 64), (2, 0), (2, 64)]
    for r in rows:
        assert list(r.keys()) == KEYS
        assert r["pp_tok_s"] > 0 and r["tg_tok_s"] > 0
        assert r["rss_bytes"] > 0 and r["predicted_tg_tok_s"] > 0
        # The memory columns are the plan's for that load: num_ctx = depth + the longest test
        # (one token and -n, or -p) + -n + 4.
        num_ctx = r["depth"] + max(16, 8 + 1) + 8 + 4
        plan = plan_json(ferry, "--ctx", str(num_ctx), "--parallel", str(r["parallel"]))
        cpu = plan["devices"][-1]
        assert r["kv_bytes"] == cpu["kv_bytes"], r
        assert r["compute_bytes"] == cpu["compute_bytes"], r
    # A progress line per load and test on stderr.
    assert "filling the KV cache to depth 64" in proc.stderr
    assert "pp16 @ d64" in proc.stderr and "tg8 @ d64" in proc.stderr
    text = run([ferry, "bench", STORIES, "-p", "8", "-n", "4", "-r", "1", "-d", "32",
                "--num-thread", "1"]).stdout
    assert "pp8 @ d32" in text and "tg4 @ d32" in text


def test_bench_depth_beyond_num_ctx_names_both(ferry):
    proc = run([ferry, "bench", STORIES, "-p", "16", "-n", "8", "-r", "1", "-d", "100",
                "--num-ctx", "64"], check=False)
    assert proc.returncode != 0
    assert "-d 100" in proc.stderr and "--num-ctx 64" in proc.stderr
    proc = run([ferry, "bench", STORIES, "-d", "-5", "-p", "8", "-n", "2"], check=False)
    assert proc.returncode != 0 and "-d" in proc.stderr and "got -5" in proc.stderr
