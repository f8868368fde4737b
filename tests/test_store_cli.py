"""The model store on the command line: `ferry create/list/show --modelfile/run/cp/rm`, the
read-only Ollama store, and the errors for bad names, bad Modelfiles and corrupt blobs.

Every test works in its own FERRY_MODELS (a temp dir) and FERRY_OLLAMA_MODELS, so nothing
touches ~/.ferry or ~/.ollama.
"""
import hashlib
import json
import os

import pytest

from conftest import SHARED, run

STORIES = SHARED / "models" / "stories260K.gguf"
TEMPLATE = "{{ if .System }}<<{{ .System }}>> {{ end }}{{ .Prompt }}"
MODELFILE = f'''# a story model
FROM {STORIES}
PARAMETER temperature 0
PARAMETER num_predict 8
PARAMETER stop "<|end|>"
SYSTEM You tell stories.
TEMPLATE """{TEMPLATE}"""
LICENSE MIT
'''


@pytest.fixture
def env(tmp_path):
    ollama = tmp_path / "ollama"
    ollama.mkdir()
    e = dict(os.environ, FERRY_MODELS=str(tmp_path / "models"), FERRY_OLLAMA_MODELS=str(ollama))
    return e


def ferry_cmd(ferry, env, *args, check=True, **kw):
    return run([ferry, *args], check=check, env=env, **kw)


def create(ferry, env, tmp_path, name, text, check=True):
    mf = tmp_path / f"Modelfile-{abs(hash(text))}"
    mf.write_text(text)
    return ferry_cmd(ferry, env, "create", name, "-f", mf, check=check)


def list_rows(ferry, env):
    lines = ferry_cmd(ferry, env, "list").stdout.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"], lines
    return {line.split()[0]: line for line in lines[1:]}


def test_create_list_show_run_cp_rm(ferry, env, tmp_path):
    out = create(ferry, env, tmp_path, "story", MODELFILE).stdout
    assert "created story:latest" in out

    rows = list_rows(ferry, env)
    assert set(rows) == {"story:latest"}, rows
    manifest = (tmp_path / "models" / "manifests" / "registry.ollama.ai" / "library" / "story" /
                "latest")
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert rows["story:latest"].split()[1] == digest[:12]
    assert " MB" in rows["story:latest"] and "ago" in rows["story:latest"]

    # --modelfile round-trips: creating from its output gives the same extras.
    shown = ferry_cmd(ferry, env, "show", "story", "--modelfile").stdout
    assert "# FROM story:latest" in shown
    assert f"TEMPLATE {TEMPLATE}" in shown or f'TEMPLATE """{TEMPLATE}"""' in shown
    assert "PARAMETER num_predict 8" in shown and "SYSTEM You tell stories." in shown
    assert "PARAMETER temperature 0\n" in shown  # as written, not 0.0
    create(ferry, env, tmp_path, "again", shown)
    again = ferry_cmd(ferry, env, "show", "again", "--modelfile").stdout
    assert again.split("\n\n", 1)[1].splitlines()[1:] == shown.split("\n\n", 1)[1].splitlines()[1:]

    params = ferry_cmd(ferry, env, "show", "story", "--parameters").stdout.splitlines()
    assert [p.split() for p in params] == [["num_predict", "8"], ["stop", '"<|end|>"'],
                                           ["temperature", "0"]], params
    assert params[1].split(None, 1)[1] == '"<|end|>"'
    assert ferry_cmd(ferry, env, "show", "story", "--template").stdout == TEMPLATE + "\n"
    # The plain `show` still describes the GGUF.
    assert "architecture" in ferry_cmd(ferry, env, "show", "story").stdout

    # The Modelfile's PARAMETERs are the run's defaults (temperature 0, 8 tokens) ...
    out = ferry_cmd(ferry, env, "run", "story", "Once upon a time", "--raw").stdout
    ref = run([ferry, "run", STORIES, "Once upon a time", "--raw", "--temperature", "0",
               "--num-predict", "8"]).stdout
    assert out == ref and out.startswith(", there was a little")
    # ... and a flag on the command line wins.
    short = ferry_cmd(ferry, env, "run", "story", "Once upon a time", "--raw", "--num-predict",
                      "3").stdout
    assert len(short) < len(out) and out.startswith(short.rstrip("\n"))
    # Chat mode renders the model's TEMPLATE with its SYSTEM (verbose says which template).
    chat = ferry_cmd(ferry, env, "run", "story", "Once upon a time", "--verbose")
    assert "chat template: the model's TEMPLATE" in chat.stderr

    assert "copied 'story' to 'me/tale:v1'" in ferry_cmd(ferry, env, "cp", "story",
                                                         "me/tale:v1").stdout
    rows = list_rows(ferry, env)
    assert {"story:latest", "again:latest", "me/tale:v1"} <= set(rows)
    assert rows["me/tale:v1"].split()[1] == rows["story:latest"].split()[1]
    ferry_cmd(ferry, env, "run", "me/tale:v1", "Once", "--raw")

    assert "deleted 'story'" in ferry_cmd(ferry, env, "rm", "story", "again").stdout
    assert set(list_rows(ferry, env)) == {"me/tale:v1"}
    proc = ferry_cmd(ferry, env, "run", "story", "Once", "--raw", check=False)
    assert proc.returncode == 1
    assert 'ferry: model "story" not found; available: me/tale:v1 (ferry list)' in proc.stderr
    proc = ferry_cmd(ferry, env, "rm", "story", check=False)
    assert proc.returncode == 1 and "ferry: " in proc.stderr and "not found" in proc.stderr
    ferry_cmd(ferry, env, "rm", "me/tale:v1")
    blobs = list((tmp_path / "models" / "blobs").iterdir())
    assert blobs == [], blobs


def test_bare_gguf_in_the_models_folder_is_listed_and_runs(ferry, env, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny-story.gguf").write_bytes(STORIES.read_bytes())
    rows = list_rows(ferry, env)
    assert "tiny-story" in rows and "(GGUF file)" in rows["tiny-story"]
    out = ferry_cmd(ferry, env, "run", "tiny-story", "Once upon a time", "--raw",
                    "--temperature", "0", "--num-predict", "4").stdout
    assert out.startswith(", there was")
    # FROM a bare file's name, and FROM a path relative to the Modelfile's folder.
    create(ferry, env, tmp_path, "from-name", "FROM tiny-story\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.gguf").write_bytes(STORIES.read_bytes())
    (tmp_path / "sub" / "Modelfile").write_text("FROM ./x.gguf\nPARAMETER seed 3\n")
    ferry_cmd(ferry, env, "create", "from-rel", "-f", tmp_path / "sub" / "Modelfile")
    # FROM a stored model: its weights, with the new PARAMETERs on top.
    create(ferry, env, tmp_path, "derived", "FROM from-rel\nPARAMETER top_k 5\n")
    params = ferry_cmd(ferry, env, "show", "derived", "--parameters").stdout.split()
    assert params == ["seed", "3", "top_k", "5"], params
    proc = ferry_cmd(ferry, env, "rm", "tiny-story", check=False)
    assert proc.returncode == 1 and "GGUF file" in proc.stderr


def make_ollama_store(root):
    """An Ollama store written by hand: `ns/handmade:v1` = stories260K + params."""
    layers = []

    def blob(data):
        hexd = hashlib.sha256(data).hexdigest()
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "blobs" / f"sha256-{hexd}").write_bytes(data)
        return {"digest": f"sha256:{hexd}", "size": len(data)}

    layers.append({"mediaType": "application/vnd.ollama.image.model", **blob(STORIES.read_bytes())})
    layers.append({"mediaType": "application/vnd.ollama.image.params",
                   **blob(json.dumps({"temperature": 0, "num_predict": 5}).encode())})
    config = blob(json.dumps({"model_format": "gguf", "model_family": "llama"}).encode())
    manifest = {"schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {"mediaType": "application/vnd.docker.container.image.v1+json", **config},
                "layers": layers}
    path = root / "manifests" / "registry.ollama.ai" / "ns" / "handmade" / "v1"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(manifest))
    return layers[0]["digest"]


def test_ollama_store_is_listed_and_runs_read_only(ferry, env, tmp_path):
    make_ollama_store(tmp_path / "ollama")
    rows = list_rows(ferry, env)
    assert "ns/handmade:v1" in rows and "read-only" in rows["ns/handmade:v1"], rows
    out = ferry_cmd(ferry, env, "run", "ns/handmade:v1", "Once upon a time", "--raw").stdout
    ref = run([ferry, "run", STORIES, "Once upon a time", "--raw", "--temperature", "0",
               "--num-predict", "5"]).stdout
    assert out == ref
    proc = ferry_cmd(ferry, env, "rm", "ns/handmade:v1", check=False)
    assert proc.returncode == 1 and "ferry: " in proc.stderr
    # A copy brings it into ferry's own store.
    ferry_cmd(ferry, env, "cp", "ns/handmade:v1", "mine")
    assert "read-only" not in list_rows(ferry, env)["mine:latest"]


def test_corrupt_blob_fails_naming_the_digest(ferry, env, tmp_path):
    digest = make_ollama_store(tmp_path / "ollama")
    blob = tmp_path / "ollama" / "blobs" / digest.replace(":", "-")
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    proc = ferry_cmd(ferry, env, "run", "ns/handmade:v1", "Once", "--raw", check=False)
    assert proc.returncode == 1
    assert "corrupt" in proc.stderr and digest in proc.stderr, proc.stderr


@pytest.mark.parametrize("name,needle,is_name", [
    ("../x", "no such file", False),
    ("a:b:c", "a:b:c", False),
    ("bad name", "bad name", False),
    ("/no/such/model", "no such file", False),
    ("no/such.gguf", "no such file", True),  # a valid namespace/name that the store lacks
])
def test_bad_names_are_clear_errors(ferry, env, tmp_path, name, needle, is_name):
    for args in (["run", name, "Hi", "--raw"], ["show", name, "--modelfile"]):
        proc = ferry_cmd(ferry, env, *args, check=False)
        assert proc.returncode == 1, proc
        assert proc.stderr.startswith("ferry: ") and needle in proc.stderr, proc.stderr
    create(ferry, env, tmp_path, "x", f"FROM {STORIES}\n")
    proc = ferry_cmd(ferry, env, "cp", "x", name, check=False)
    if is_name:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 1 and proc.stderr.startswith("ferry: "), proc.stderr
        assert f'invalid model name "{name}"' in proc.stderr, proc.stderr


def test_an_existing_non_gguf_file_is_rejected_by_the_reader(ferry, env, tmp_path):
    proc = ferry_cmd(ferry, env, "run", "/etc/passwd", "Hi", "--raw", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("ferry: ")
    assert "GGUF" in proc.stderr or "gguf" in proc.stderr, proc.stderr
    proc = create(ferry, env, tmp_path, "x", "FROM /etc/passwd\n", check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("ferry: "), proc.stderr


@pytest.mark.parametrize("text,needle", [
    (f"FROM {STORIES}\nFROB x\n", "line 2"),
    (f"FROM {STORIES}\nPARAMETER warmth 3\n", "line 2"),
    (f"FROM {STORIES}\nADAPTER x.bin\n", "line 2"),
    ("PARAMETER seed 1\n", "FROM"),
    (f'FROM {STORIES}\nTEMPLATE """{{{{ .Prompt }}"""\n', "TEMPLATE"),
    (f'FROM {STORIES}\nTEMPLATE """{{{{ .Nope }}}}"""\n', "TEMPLATE"),
    ("FROM no-such-model\n", "not found"),
])
def test_bad_modelfiles_are_errors_naming_the_line(ferry, env, tmp_path, text, needle):
    proc = create(ferry, env, tmp_path, "m", text, check=False)
    assert proc.returncode == 1 and proc.stderr.startswith("ferry: "), proc.stderr
    assert needle in proc.stderr and "Modelfile" in proc.stderr, proc.stderr
    assert not (tmp_path / "models" / "manifests" / "registry.ollama.ai" / "library" / "m").exists()
