"""`ferry bench`: the JSON rows, the table and bad flags (structure only, no speed thresholds)."""
import json

from conftest import SHARED, run

STORIES = SHARED / "models" / "stories260K.gguf"
KEYS = ["parallel", "n_prompt", "n_gen", "threads", "kv_type", "pp_tok_s", "pp_sd", "tg_tok_s",
        "tg_sd"]


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
    assert all("stories260K" in line and "q8_0" in line and "±" in line for line in lines[2:])


def test_bench_rejects_bad_flags(ferry):
    proc = run([ferry, "bench", STORIES, "--parallel", "0", "-p", "8", "-n", "2", "-r", "1"],
               check=False)
    assert proc.returncode != 0
    assert "--parallel" in proc.stderr and "got 0" in proc.stderr
    proc = run([ferry, "bench", STORIES, "--kv-type", "q5_9", "-p", "8", "-n", "2"], check=False)
    assert proc.returncode != 0 and "q5_9" in proc.stderr
