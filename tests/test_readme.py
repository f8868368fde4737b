"""The README's examples run as written, and their output is what the README says.

Every command in the README's ```sh blocks is run (but `make demo` and `make test`, which are
what runs this), with `build/bin/ferry` meaning the binary under test and `MODEL` meaning
stories260K with its trained context raised to 32768 in a copy (so the deep `bench -d` and
`plan --ctx` examples are quick; the other placeholders name files made here). The
interactive example runs on a pseudo-terminal. Each command must exit 0; where the README's
comment promises something about the output, that is checked too."""
import json
import os
import re
import shlex
import struct
import subprocess

import pytest

from conftest import DEFAULT_MODEL, ROOT, SHARED, binary

README = ROOT / "README.md"
STORIES = SHARED / "models" / "stories260K.gguf"


def readme_blocks():
    return re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)


def commands(block):
    """The block's commands: continuation lines joined, a heredoc kept with its command."""
    out, lines = [], block.replace("\\\n", " ").splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            i += 1
            continue
        heredoc = re.search(r"<<'(\w+)'", line)
        if heredoc:
            end = lines.index(heredoc.group(1), i)
            line = "\n".join(lines[i:end + 1])
            i = end
        out.append(line)
        i += 1
    return out


def all_commands():
    return [c for b in readme_blocks() for c in commands(b) if not c.startswith("make ")]


def single_commands():
    """Every command but the store block's, which runs as one script (test_readme_store_block)."""
    return [c for b in readme_blocks() if "ferry create" not in b for c in commands(b)
            if not c.startswith("make ")]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    data = bytearray(STORIES.read_bytes())
    key = b"llama.context_length"
    at = data.index(key) + len(key)
    assert struct.unpack_from("<I", data, at)[0] == 4  # GGUF_TYPE_UINT32
    struct.pack_into("<I", data, at + 4, 32768)
    path = tmp_path_factory.mktemp("readme") / "stories-32k.gguf"
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, model):
    d = tmp_path_factory.mktemp("readme-work")
    (d / "text.txt").write_text((ROOT / "tests" / "data" / "story.txt").read_text())
    (d / "notes.txt").write_text("Lily and Ben went to the park. They saw a big red ball.\n")
    return d


def expand(command, model, workdir):
    c = command.replace("build/bin/ferry", shlex.quote(str(binary("ferry"))))
    c = c.replace("~/.ferry/models/gemma-3-270m-q4_k_m.gguf", shlex.quote(str(DEFAULT_MODEL)))
    c = c.replace("../shared/", str(SHARED) + "/")
    return re.sub(r"\bMODEL\b", shlex.quote(str(model)), c)


def env_for(workdir):
    env = dict(os.environ, NO_COLOR="1")
    env.pop("FERRY_HOST", None)  # never a server a developer left running
    env["FERRY_MODELS"] = str(DEFAULT_MODEL.parent)
    return env


# What the README's comments promise, by a piece of the command.
def check(command, out, err):
    command = command.split("  #")[0].strip()  # the code, without the README's comment
    if command.endswith("Why is the sky blue"):
        assert "has no chat template: running raw" in err
    if "--verbose" in command:
        assert "tok/s" in err
    if "show --json" in command or "plan MODEL --json" in command:
        j = json.loads(out)
        if "plan" in command:
            device = j["plan"]["devices"][0]
            for key in ("name", "weights_bytes", "kv_bytes", "compute_bytes", "host_bytes",
                        "sampling_bytes", "total_bytes", "layers"):
                assert key in device, key
    if "show --tensors" in command:
        assert "token_embd.weight" in out
    if "show --metadata" in command:
        assert "general.architecture" in out
    if command.endswith("bench MODEL"):  # the default: pp512 and tg128
        assert "pp512" in out and "tg128" in out
    if "--parallel 1,4 --json" in command:
        rows = json.loads(out)
        assert {(r["parallel"], r["n_prompt"]) for r in rows if r["n_prompt"]} == {(1, 512), (4, 512)}
    if "-d 0,4096" in command:
        assert "d4096" in out, out
    if "--ctx 2048,8192,32768,131072" in command:
        assert all(str(n) in out for n in (2048, 8192, 32768, 131072))
    if "ferry list" in command:
        assert out.split("\n")[0].split()[:4] == ["NAME", "ID", "SIZE", "MODIFIED"]
    if "run story" in command:
        assert out.strip()


def test_every_example_is_checked():
    cmds = all_commands()
    assert len(cmds) >= 25, cmds  # the parser found the README's examples


@pytest.mark.parametrize("command", single_commands())
def test_readme_example(command, model, workdir, tmp_path):
    expanded = expand(command, model, workdir)
    env = env_for(workdir)
    if re.fullmatch(r"build/bin/ferry run MODEL\s*(#.*)?", command.strip()):
        pexpect = pytest.importorskip("pexpect")
        child = pexpect.spawn("bash", ["-c", expanded], encoding="utf-8", timeout=60, env=env,
                              cwd=str(workdir))
        child.expect_exact(">>> ")
        child.sendline("/bye")
        child.expect(pexpect.EOF)
        child.close()
        assert child.exitstatus == 0
        return
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", expanded], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (command, proc.stderr[-2000:])
    check(command, proc.stdout, proc.stderr)


def test_readme_store_block(model, workdir, tmp_path):
    # The Modelfile example as one script, in a models folder of its own, from the repository
    # root (its FROM path is relative to it).
    block = next(b for b in readme_blocks() if "ferry create" in b)
    env = env_for(workdir)
    env["FERRY_MODELS"] = str(tmp_path / "models")
    script = "set -e\n" + "\n".join(expand(c, model, workdir) for c in commands(block))
    proc = subprocess.run(["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    header = next(i for i, l in enumerate(lines) if l.startswith("NAME"))
    assert lines[header].split()[:4] == ["NAME", "ID", "SIZE", "MODIFIED"]
    assert lines[header + 1].startswith("story:latest") or lines[header + 1].startswith("story")
    assert "FROM" in proc.stdout  # show --modelfile
