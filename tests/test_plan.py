"""`ferry plan`: JSON shape, described devices, sweeps and bad input."""
import json
import math
import os

import pytest

from conftest import SHARED, run

STORIES = SHARED / "models" / "stories260K.gguf"


def plan_json(ferry, model, *args):
    return json.loads(run([ferry, "plan", model, "--json", *args]).stdout)


def test_plan_json_on_described_devices(ferry, default_model):
    out = plan_json(ferry, default_model, "--ctx", "8192", "--devices", "cuda0=2GiB,cpu=16GiB")
    plan = out["plan"]
    names = [d["name"] for d in plan["devices"]]
    assert names == ["cuda0", "cpu"]
    gpu, cpu = plan["devices"]
    for d in plan["devices"]:
        for key in ["weights_bytes", "kv_bytes", "compute_bytes", "total_bytes", "layers"]:
            assert key in d
        assert d["total_bytes"] == (d["weights_bytes"] + d["kv_bytes"] + d["compute_bytes"]
                                    + d["host_bytes"] + d["sampling_bytes"])
    assert gpu["layers"] == list(range(18)) and gpu["output"]
    # Per layer: where it runs, its weights and its KV; they add up to the devices' totals.
    per_layer = plan["layers"]
    assert [l["layer"] for l in per_layer] == list(range(18))
    assert all(l["device"] == "cuda0" for l in per_layer)
    assert sum(l["kv_bytes"] for l in per_layer) == gpu["kv_bytes"]
    assert sum(l["weights_bytes"] for l in per_layer) < gpu["weights_bytes"]  # + output
    assert cpu["layers"] == [] and cpu["input"]
    # Gemma 3 270M: 3 global layers x 8192 + 15 sliding-window rings of ceil((512+512)/32)+1
    # blocks x 32 tokens, each token 2 x 256 values x 2 bytes.
    assert gpu["kv_bytes"] == (3 * 8192 + 15 * 33 * 32) * 1024
    assert out["limits"]["max_ctx_all_gpu"] > 8192
    assert out["limits"]["max_ctx"] >= out["limits"]["max_ctx_all_gpu"]
    # The split as Ollama's ps shows it, from the planned bytes (the GPU's share rounded).
    gpu_share = round(100 * gpu["total_bytes"] / (gpu["total_bytes"] + cpu["total_bytes"]))
    assert plan["processor"] == f"{100 - gpu_share}%/{gpu_share}% CPU/GPU"
    assert 0 < gpu_share < 100
    # A described GPU's context memory is unknown (measured only on a discovered one).
    assert gpu["context_bytes"] == 0
    assert plan["predicted_tok_s"] > 0


def test_plan_processor_split_follows_num_gpu(ferry):
    def processor(*args):
        return plan_json(ferry, STORIES, "--ctx", "256", "--devices", "cuda0=2GiB,cpu=16GiB",
                         *args)["plan"]["processor"]
    assert processor("--num-gpu", "0") == "100% CPU"
    # Every layer and the output on the GPU: the CPU still holds the input embedding, the host
    # tables, the samplers' memory and the host scratch.
    full = processor("--num-gpu", "6")
    assert full.endswith("% CPU/GPU")
    cpu_full = int(full.split("%")[0])
    half = processor("--num-gpu", "3")
    assert int(half.split("%")[0]) > cpu_full  # fewer layers on the GPU: a larger CPU share


def test_cpu_only_and_num_gpu_zero(ferry):
    out = plan_json(ferry, STORIES, "--ctx", "512", "--devices", "cuda0=8GiB,cpu=1GiB",
                    "--num-gpu", "0")
    gpu, cpu = out["plan"]["devices"]
    assert gpu["total_bytes"] == 0 and cpu["layers"] == [0, 1, 2, 3, 4]
    # stories260K: 5 layers x (K + V) x 4 heads x 8 dims x 2 bytes x 512 tokens.
    assert cpu["kv_bytes"] == 5 * 2 * 32 * 2 * 512


def test_sweep(ferry, default_model):
    out = plan_json(ferry, default_model, "--ctx", "2048,8192,32768,131072", "--devices",
                    "cuda0=1GiB,cpu=4GiB")
    rows = out["sweep"]
    assert [r["num_ctx"] for r in rows] == [2048, 8192, 32768, 131072]
    text = run([ferry, "plan", default_model, "--ctx", "2048,8192", "--devices",
                "cuda0=1GiB,cpu=4GiB"]).stdout
    assert "num_ctx" in text and "tok/s" in text and "18L+out" in text


def test_layers_table(ferry):
    text = run([ferry, "plan", STORIES, "--ctx", "512", "--devices", "cuda0=8GiB,cpu=1GiB",
                "--num-gpu", "3", "--layers"]).stdout
    rows = [line.split() for line in text.splitlines() if line.strip()[:1].isdigit()]
    # stories260K has 5 layers: --num-gpu 3 puts the output and the last 2 blocks on cuda0.
    assert [r[1] for r in rows] == ["cpu", "cpu", "cpu", "cuda0", "cuda0"]


def test_above_trained_context_warns(ferry, default_model):
    out = plan_json(ferry, default_model, "--ctx", "65536", "--devices", "cpu=8GiB")
    assert any("trained on" in w for w in out["plan"]["warnings"])


@pytest.mark.parametrize("args,needle", [
    (["--ctx", "0"], "num_ctx 0"),
    (["--ctx", "16777217"], "num_ctx 16777217"),
    (["--ctx", "abc"], "not a number"),
    (["--parallel", "0"], "num_parallel 0"),
    (["--kv-type", "q9_9"], "unknown tensor type"),
    (["--kv-type", "q5_0"], "not supported"),
    (["--devices", "cuda0=8GiB"], "cpu"),
    (["--devices", "tpu0=8GiB,cpu=1GiB"], "tpu0"),
    (["--devices", "cpu=1GiB@0GFLOPS"], "zero"),
    (["--devices", "cpu=1GiB@1GFLOPS@2GFLOPS"], "more than one FLOPS"),
    (["--num-thread", "-1"], "--num-thread"),
])
def test_bad_input(ferry, args, needle):
    proc = run([ferry, "plan", STORIES, *args], check=False)
    assert proc.returncode != 0
    assert needle in proc.stderr, proc.stderr


def test_nothing_fits_says_what_is_missing(ferry, default_model):
    proc = run([ferry, "plan", default_model, "--devices", "cpu=100MiB"], check=False)
    assert proc.returncode == 1
    assert "needs" in proc.stderr and "more on cpu" in proc.stderr


def test_speed_model_with_described_flops(ferry):
    # 1 GFLOP/s against 1 TB/s: the CPU is compute-bound and the speed is FLOP/s / FLOPs.
    out = plan_json(ferry, STORIES, "--ctx", "512", "--devices", "cpu=1GiB@1TB/s@1GFLOPS")
    cpu = out["plan"]["devices"][0]
    assert cpu["matmul_flops"] == 1e9 and cpu["matmul_flops_source"] == "described"
    assert cpu["bandwidth_bytes_per_s"] == 1e12
    assert cpu["flops_per_token"] > 0 and cpu["bound"] == "compute-bound"
    assert out["plan"]["predicted_tok_s"] == pytest.approx(1e9 / cpu["flops_per_token"])
    # 10 MB/s against 1 TFLOP/s: memory-bound.
    out = plan_json(ferry, STORIES, "--ctx", "512", "--devices", "cpu=1GiB@10MB/s@1TFLOPS")
    cpu = out["plan"]["devices"][0]
    assert cpu["bound"] == "memory-bound"
    assert out["plan"]["predicted_tok_s"] == pytest.approx(1e7 / cpu["bytes_read_per_token"])
    text = run([ferry, "plan", STORIES, "--devices", "cpu=1GiB@1TB/s@1GFLOPS"]).stdout
    assert "compute-bound" in text and "1.00 GFLOP/s" in text


def test_cpu_flops_measured_overridden_or_off(ferry):
    env = dict(os.environ)
    env.pop("FERRY_CPU_FLOPS", None)
    cpu = plan_json_env(ferry, env)["plan"]["devices"][0]
    assert cpu["matmul_flops_source"] == "measured"
    assert cpu["matmul_flops"] > 0 and math.isfinite(cpu["matmul_flops"])  # a measurement
    env["FERRY_CPU_FLOPS"] = "50GFLOPS"
    cpu = plan_json_env(ferry, env)["plan"]["devices"][0]
    assert cpu["matmul_flops"] == 50e9 and cpu["matmul_flops_source"] == "override"
    env["FERRY_CPU_FLOPS"] = "off"
    cpu = plan_json_env(ferry, env)["plan"]["devices"][0]
    assert cpu["matmul_flops"] == 0 and cpu["bound"] == "memory-bound"
    env["FERRY_CPU_FLOPS"] = "fast"
    proc = run([ferry, "plan", STORIES], check=False, env=env)
    assert proc.returncode != 0 and "FERRY_CPU_FLOPS" in proc.stderr


def test_cpu_bandwidth_measured_or_overridden(ferry):
    env = dict(os.environ)
    env.pop("FERRY_CPU_BANDWIDTH", None)
    cpu = plan_json_env(ferry, env)["plan"]["devices"][0]
    assert cpu["bandwidth_source"] == "measured"
    assert cpu["bandwidth_bytes_per_s"] > 0 and math.isfinite(cpu["bandwidth_bytes_per_s"])
    assert isinstance(cpu["looked_busy"], bool)
    env["FERRY_CPU_BANDWIDTH"] = "12.5GB/s"
    cpu = plan_json_env(ferry, env)["plan"]["devices"][0]
    assert cpu["bandwidth_bytes_per_s"] == 12.5e9 and cpu["bandwidth_source"] == "override"
    text = run([ferry, "plan", STORIES], env=env).stdout
    assert "12.5 GB/s" in text
    for bad in ("fast", "0GB/s", "-3GB/s"):
        env["FERRY_CPU_BANDWIDTH"] = bad
        proc = run([ferry, "plan", STORIES], check=False, env=env)
        assert proc.returncode != 0 and "FERRY_CPU_BANDWIDTH" in proc.stderr, bad
    # A described device's bandwidth is its own, never measured.
    out = plan_json(ferry, STORIES, "--devices", "cpu=1GiB@7GB/s")
    assert out["plan"]["devices"][0]["bandwidth_source"] == "described"
    out = plan_json(ferry, STORIES, "--devices", "cpu=1GiB")
    assert out["plan"]["devices"][0]["bandwidth_source"] == "default"


def test_cpu_kernels_can_be_capped(ferry):
    env = dict(os.environ)
    env.pop("FERRY_CPU_KERNELS", None)
    best = plan_json_env(ferry, env)["cpu_kernels"]
    assert best in ("avx512-vnni", "avx2", "portable")
    env["FERRY_CPU_KERNELS"] = "portable"
    assert plan_json_env(ferry, env)["cpu_kernels"] == "portable"
    assert "CPU kernels portable" in run([ferry, "plan", STORIES], env=env).stdout
    env["FERRY_CPU_KERNELS"] = "avx2"
    assert plan_json_env(ferry, env)["cpu_kernels"] in ("avx2", "portable")
    env["FERRY_CPU_KERNELS"] = "sse9"
    proc = run([ferry, "plan", STORIES], check=False, env=env)
    assert proc.returncode != 0 and "FERRY_CPU_KERNELS" in proc.stderr and "sse9" in proc.stderr


def plan_json_env(ferry, env):
    return json.loads(run([ferry, "plan", STORIES, "--json", "--num-thread", "1"],
                          env=env).stdout)
