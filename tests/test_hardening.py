"""Hostile files, absurd flags and failed writes: a clear error and exit 1, never a crash, an
OOM kill, or exit 0 with garbage (the hardening issue's reproductions, each rerun here)."""
import os
import resource
import struct
import subprocess

import pytest

from conftest import SHARED, run

STORIES = SHARED / "models" / "stories260K.gguf"


def patched(tmp_path, key, fmt, value, name="patched.gguf"):
    """stories260K with one scalar metadata value overwritten in place (same size)."""
    data = bytearray(STORIES.read_bytes())
    k = key.encode()
    at = data.find(struct.pack("<Q", len(k)) + k)
    assert at >= 0, key
    at += 8 + len(k) + 4  # key, then the value's type
    struct.pack_into(fmt, data, at, value)
    out = tmp_path / name
    out.write_bytes(data)
    return out


def limited_memory(gib):
    """preexec_fn: cap the child's address space so an unbounded allocation fails fast (it used
    to reach 23.5 GB and be OOM-killed)."""
    def apply():
        limit = gib << 30
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


@pytest.mark.parametrize("count", [2147483647, 4000000000, 10000000])
@pytest.mark.parametrize("command", [["show"], ["plan"], ["run", "--raw", "hi"]])
def test_absurd_block_count_is_rejected_without_allocating(ferry, tmp_path, count, command):
    path = patched(tmp_path, "llama.block_count", "<I", count)
    proc = run([ferry, command[0], path, *command[1:]], check=False,
               preexec_fn=limited_memory(2))
    if command[0] == "show":
        # show describes the file as it is, and says it cannot be loaded.
        assert proc.returncode == 0, proc.stderr
        assert f"{count} (more than the file's 48 tensors: not loadable)" in proc.stdout
    else:
        assert proc.returncode == 1, proc.stderr
        assert f"'llama.block_count' = {count} layers, but the file holds only 48 tensors" \
            in proc.stderr
        assert "internal error" not in proc.stderr


def test_control_characters_in_metadata_are_escaped(ferry, tmp_path):
    # general.name is "llama" (5 bytes): replace it with a terminal escape of the same length.
    data = bytearray(STORIES.read_bytes())
    key = b"general.name"
    at = data.find(struct.pack("<Q", len(key)) + key) + 8 + len(key) + 4
    assert struct.unpack_from("<Q", data, at)[0] == 5
    data[at + 8:at + 13] = b"\x1b[2J\x07"
    path = tmp_path / "escape.gguf"
    path.write_bytes(data)
    for args in (["show", path], ["show", path, "--metadata"]):
        proc = run([ferry, *args])
        assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
        assert "\\x1b[2J\\x07" in proc.stdout


@pytest.mark.parametrize("args", [
    ["show", STORIES, "--json"],
    ["plan", STORIES, "--json"],
    ["run", STORIES, "Once upon a time", "--raw", "--num-predict", "4", "--local"],
])
def test_output_that_cannot_be_written_is_a_failure(ferry, args):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    with open("/dev/full", "wb") as full:
        p = subprocess.run([str(ferry), *[str(a) for a in args]], stdout=full,
                           stderr=subprocess.PIPE, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert p.returncode == 1, p.stderr
    assert "cannot write the output" in p.stderr


def test_huge_prompt_is_rejected_before_tokenizing_it_all(ferry, tmp_path):
    # 20 MB on stdin: more bytes than 2048 tokens of any vocabulary can hold, so ferry stops
    # reading at 2 MiB and answers at once, within a memory cap far below what tokenizing it
    # whole took.
    text = "Once upon a time there was a little dog. " * 500000
    proc = run([ferry, "run", STORIES, "--raw", "--local", "--num-ctx", "2048"], check=False,
               input=text + "\n", preexec_fn=limited_memory(2))
    assert proc.returncode == 1, proc.stderr
    assert "the prompt does not fit: standard input holds more than 2097152 bytes" in proc.stderr
    # 1 MB fits those bytes, but the tokenizer stops as soon as the count passes num_ctx.
    proc = run([ferry, "run", STORIES, "--raw", "--local", "--num-ctx", "2048"], check=False,
               input=text[:1000000], preexec_fn=limited_memory(2))
    assert proc.returncode == 1, proc.stderr
    assert "the prompt does not fit: num_ctx is 2048" in proc.stderr
    assert "more than the limit of 2048" in proc.stderr


def test_num_ctx_above_the_trained_context_is_capped_with_a_warning(ferry):
    # stories260K was trained at 2048; 16777216 used to allocate 10.5 GB.
    proc = run([ferry, "run", STORIES, "Once upon a time", "--raw", "--num-predict", "4",
                "--temperature", "0", "--num-ctx", "16777216", "--local"],
               preexec_fn=limited_memory(4))
    assert "num_ctx 16777216 is above the 2048 tokens" in proc.stderr
    assert "using 2048" in proc.stderr
    out = run([ferry, "plan", STORIES]).stdout
    assert "with CPU offload: 2048 (the trained context; memory allows" in out


def tensor_offset(path, name):
    """Absolute file offset of a tensor's data (gguf-py's reader)."""
    from gguf import GGUFReader
    for t in GGUFReader(str(path)).tensors:
        if t.name == name:
            return int(t.data_offset)
    raise KeyError(name)


def with_floats(tmp_path, tensor, values, name):
    """stories260K with the first floats of an F32 tensor overwritten."""
    data = bytearray(STORIES.read_bytes())
    at = tensor_offset(STORIES, tensor)
    for i, v in enumerate(values):
        struct.pack_into("<f", data, at + 4 * i, v)
    out = tmp_path / name
    out.write_bytes(data)
    return out


def test_nan_weight_is_found_at_load(ferry, tmp_path):
    path = with_floats(tmp_path, "blk.2.ffn_up.weight", [1.0, float("nan")], "nan.gguf")
    proc = run([ferry, "run", path, "Once upon a time", "--raw", "--num-predict", "4",
                "--local"], check=False)
    assert proc.returncode == 1, proc.stderr
    assert "tensor 'blk.2.ffn_up.weight' (f32) holds a non-finite value" in proc.stderr
    assert "at element 1" in proc.stderr
    assert proc.stdout == ""
    proc = run([ferry, "perplexity", path, SHARED / "models" / "stories260K.gguf"], check=False)
    assert proc.returncode == 1 and "non-finite value" in proc.stderr


def test_overflowing_logits_stop_the_request(ferry, tmp_path):
    # Finite weights so large that the logits overflow to infinity: the request ends with an
    # error naming the model, never with text drawn from them.
    path = with_floats(tmp_path, "output.weight", [3.0e38] * 64, "overflow.gguf")
    proc = run([ferry, "run", path, "Once upon a time", "--raw", "--num-predict", "4",
                "--temperature", "0", "--local"], check=False)
    assert proc.returncode == 1, proc.stderr
    assert "produced non-finite logits" in proc.stderr and str(path) in proc.stderr


def test_model_truncated_between_turns_fails_the_turn(ferry, tmp_path):
    # An interactive session (on a pseudo-terminal) whose model file is truncated after the
    # first turn: the second turn fails with an error naming the file, the session goes on, and
    # the process ends normally with exit 1 (it used to die of SIGBUS, exit 135).
    pexpect = pytest.importorskip("pexpect")
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(STORIES.read_bytes())
    child = pexpect.spawn(str(ferry), ["run", str(copy), "--raw", "--local", "--temperature",
                                       "0", "--num-predict", "8"], encoding="utf-8", timeout=60)
    child.expect_exact(">>> ")
    child.sendline("Once upon a time")
    child.expect("there was")
    child.expect_exact(">>> ")
    os.truncate(copy, 4096)
    child.sendline("Once upon a time")
    child.expect("changed on disk while loaded")
    child.expect_exact(">>> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1


@pytest.mark.parametrize("args,needle", [
    (["--temperature", "-1"], "temperature must be a finite number >= 0"),
    (["--top-k", "-5"], "top_k must be >= 0"),
    (["--seed", "-2"], "--seed"),
])
def test_sampling_flags_out_of_range_are_errors(ferry, args, needle):
    proc = run([ferry, "run", STORIES, "Hi", "--raw", "--num-predict", "2", "--local", *args],
               check=False)
    assert proc.returncode != 0 and proc.returncode != 135
    assert needle in proc.stderr, proc.stderr


def test_seed_minus_one_is_random_as_in_ollama(ferry):
    # -1 draws a fresh seed each run (a fixed seed gives the same text every time); at
    # temperature 1.5 over 24 tokens, five runs that all agree would mean a fixed seed.
    outs = {run([ferry, "run", STORIES, "Once upon a time", "--raw", "--num-predict", "24",
                 "--temperature", "1.5", "--seed", "-1", "--local"]).stdout for _ in range(5)}
    assert len(outs) > 1
    fixed = {run([ferry, "run", STORIES, "Once upon a time", "--raw", "--num-predict", "24",
                  "--temperature", "1.5", "--seed", "7", "--local"]).stdout for _ in range(2)}
    assert len(fixed) == 1


def test_num_thread_above_the_hardware_is_capped_with_a_warning(ferry):
    proc = run([ferry, "run", STORIES, "Once upon a time", "--raw", "--num-predict", "4",
                "--num-thread", "1000", "--local"])
    assert "num_thread 1000 is more than the" in proc.stderr and "hardware threads" in proc.stderr


@pytest.mark.parametrize("args,needle", [
    (["--devices", "cuda0=8,cpu=8GiB"], "size '8' has no unit"),
    (["--devices", ""], "empty device description"),
    (["--devices", "cpu=8GiB", "--gpu-memory", "4GiB"], "--gpu-memory applies to discovered"),
])
def test_device_flags_are_not_silently_misread(ferry, args, needle):
    proc = run([ferry, "plan", STORIES, *args], check=False)
    assert proc.returncode == 1, proc.stdout
    assert needle in proc.stderr, proc.stderr
