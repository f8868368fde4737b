"""`ferry serve` with the model store: /api/create, /api/copy, /api/delete, stored models'
TEMPLATE / SYSTEM / PARAMETERs in generate, /api/show's modelfile and option_sources, /api/tags;
and the `ferry ps` / `ferry stop` clients. A real server on a free port, driven by the `ollama`
client; the store is a temp FERRY_MODELS, the Ollama store an empty temp folder.
"""
import json
import socket
import os
import subprocess

import ollama
import pytest

from conftest import SHARED, binary
from test_serve import Serve

STORIES = "stories260K"
TEMPLATE = "{{ if .System }}{{ .System }}\n{{ end }}Once upon a time, {{ .Prompt }}"
SYSTEM = "There was a little girl named Lily who loved to play outside in the park."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("store-models")
    (d / f"{STORIES}.gguf").symlink_to(SHARED / "models" / "stories260K.gguf")
    empty = tmp_path_factory.mktemp("ollama-empty")
    s = Serve(d, FERRY_OLLAMA_MODELS=empty)
    s.models_dir = d
    yield s
    s.stop()


def run_ferry(server, *args, port=None):
    env = dict(os.environ)
    env["FERRY_HOST"] = f"127.0.0.1:{port or server.port}"
    env["FERRY_MODELS"] = str(server.models_dir)
    return subprocess.run([str(binary("ferry")), *args], env=env, capture_output=True,
                          text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_create_generate_show_tags_copy_delete(server):
    c = server.client
    r = c.create(model="tiny", from_=STORIES, template=TEMPLATE, system=SYSTEM,
                 parameters={"temperature": 0, "num_predict": 6}, stream=False)
    assert r.status == "success"
    # Streaming create: status lines ending with success.
    lines = [p.status for p in c.create(model="tiny2", from_=STORIES, stream=True)]
    assert lines[-1] == "success" and len(lines) > 1

    g = c.generate(model="tiny", prompt="the cat")
    assert g.eval_count == 6  # the Modelfile's num_predict
    g2 = c.generate(model="tiny", prompt="the cat")
    assert g2.response == g.response  # temperature 0
    assert c.generate(model="tiny", prompt="the cat", options={"num_predict": 3}).eval_count == 3
    # TEMPLATE and SYSTEM are in the prompt: more tokens than the bare model's raw prompt.
    bare = c.generate(model=STORIES, prompt="the cat", options={"num_predict": 1})
    assert g.prompt_eval_count > bare.prompt_eval_count + 15
    # A request's system replaces the stored one (a shorter prompt).
    short = c.generate(model="tiny", prompt="the cat", system="Hi.")
    assert short.prompt_eval_count < g.prompt_eval_count

    status, text = server.post("/api/show", {"model": "tiny", "options": {"top_k": 5}})
    assert status == 200, text
    show = json.loads(text)
    assert "FROM " in show["modelfile"] and "PARAMETER num_predict 6" in show["modelfile"]
    assert "TEMPLATE" in show["modelfile"] and "SYSTEM" in show["modelfile"]
    assert show["template"] == TEMPLATE and show["system"] == SYSTEM
    assert any(l.split() == ["num_predict", "6"] for l in show["parameters"].splitlines())
    src = show["option_sources"]
    assert src["num_predict"] == "modelfile" and src["temperature"] == "modelfile"
    assert src["top_k"] == "request" and src["num_ctx"] == "default"
    assert show["options"]["num_predict"] == 6

    names = {m.model for m in c.list().models}
    assert {"tiny:latest", "tiny2:latest", STORIES} <= names
    tagged = next(m for m in c.list().models if m.model == "tiny:latest")
    assert tagged.digest and tagged.size > 0 and tagged.details.format == "gguf"
    assert server.get("/v1/models/tiny")[0] == 200
    assert "tiny:latest" in server.get("/v1/models")[1]

    assert c.copy("tiny", "tiny-copy").status == "success"
    assert c.generate(model="tiny-copy", prompt="the cat").eval_count == 6
    c.delete("tiny-copy")
    with pytest.raises(ollama.ResponseError) as e:
        c.delete("tiny-copy")
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        c.generate(model="tiny-copy", prompt="x")
    assert e.value.status_code == 404


def test_chat_uses_system_and_messages(server):
    c = server.client
    c.create(model="chatty", from_=STORIES, system=SYSTEM, stream=False,
             messages=[{"role": "user", "content": "Tell me about the big red ball."},
                       {"role": "assistant", "content": "The ball was big and red."}],
             parameters={"num_predict": 2, "temperature": 0})
    msgs = [{"role": "user", "content": "the cat"}]
    plain = c.chat(model=STORIES, messages=msgs, options={"num_predict": 2})
    stored = c.chat(model="chatty", messages=msgs)
    assert stored.eval_count == 2
    # SYSTEM and the two MESSAGEs come before the request's message.
    assert stored.prompt_eval_count > plain.prompt_eval_count + 20
    own = c.chat(model="chatty", messages=[{"role": "system", "content": "Hi."}, *msgs])
    assert own.prompt_eval_count < stored.prompt_eval_count
    status, text = server.post("/api/show", {"model": "chatty"})
    assert status == 200 and json.loads(text)["messages"][1]["role"] == "assistant"


def test_create_errors(server):
    c = server.client
    with pytest.raises(ollama.ResponseError) as e:
        c.create(model="bad", from_=STORIES, template="{{ if .System }}", stream=False)
    assert e.value.status_code == 400 and "template" in str(e.value)
    with pytest.raises(ollama.ResponseError) as e:
        c.create(model="../x", from_=STORIES, stream=False)
    assert e.value.status_code == 400 and "model" in str(e.value)
    with pytest.raises(ollama.ResponseError) as e:
        c.create(model="ok", from_="no-such-model", stream=False)
    assert e.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as e:
        c.create(model="ok", from_=STORIES, parameters={"num_predict": "many"}, stream=False)
    assert e.value.status_code == 400 and "num_predict" in str(e.value)
    # The older `modelfile` text.
    status, text = server.post("/api/create", {
        "model": "fromtext", "stream": False,
        "modelfile": f"FROM {STORIES}\nPARAMETER num_predict 4\nPARAMETER temperature 0\n"})
    assert status == 200, text
    assert c.generate(model="fromtext", prompt="the dog").eval_count == 4


def test_ps_and_stop(server):
    c = server.client
    # A model of its own, so that no earlier test's runner (a larger num_ctx) serves it.
    c.create(model="pstest", from_=STORIES, stream=False)
    c.generate(model="pstest", prompt="the cat", options={"num_predict": 2, "num_ctx": 256})
    r = run_ferry(server, "ps")
    assert r.returncode == 0, r.stderr
    head, *rows = r.stdout.splitlines()
    assert head.split() == ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL", "KV"]
    row = next(x for x in rows if x.startswith("pstest"))
    assert "100% CPU" in row and " 256 " in row and "from now" in row
    assert len(row.split()[1]) == 12  # the stored model's digest
    kv = row.split()[-1]
    used, total = kv.split("/")
    assert int(total) > 0 and 0 <= int(used) <= int(total)
    ps = json.loads(server.get("/api/ps")[1])
    loaded = next(m for m in ps["models"] if m["name"] == "pstest")
    assert loaded["option_sources"] == {"num_ctx": "request"}

    r = run_ferry(server, "stop", "pstest")
    assert r.returncode == 0, r.stderr
    assert not [m for m in c.ps().models if m.model == "pstest"]
    r = run_ferry(server, "ps")
    assert r.returncode == 0 and "pstest" not in r.stdout


def test_ps_without_server(server):
    from test_serve import free_port
    port = free_port()
    r = run_ferry(server, "ps", port=port)
    assert r.returncode == 1
    assert r.stderr.strip() == f"ferry: no server on 127.0.0.1:{port} (start one with ferry serve)"


def test_bad_names_modelfiles_and_a_corrupted_blob(server):
    c = server.client
    for name in ("/etc/passwd", "a:b:c", "../x"):
        status, text = server.post("/api/generate", {"model": name, "prompt": "x"})
        assert status == 400 and "model" in json.loads(text)["error"], (name, text)
    status, text = server.post("/api/create", {
        "model": "weird", "stream": False, "modelfile": f"FROM {STORIES}\nFLY high\n"})
    assert status == 400 and "FLY" in json.loads(text)["error"], text
    # A stored blob whose bytes no longer match its digest: a server that reads it for the
    # first time refuses the model, naming the blob, and keeps serving everything else. (The
    # server that created it verified it then and keeps what it read.)
    system = "A unique system message for the corrupted-blob test."
    c.create(model="corrupt", from_=STORIES, system=system, stream=False)
    blobs = [p for p in (server.models_dir / "blobs").iterdir()
             if p.stat().st_size < 4096 and system.encode() in p.read_bytes()]
    assert len(blobs) == 1
    blob = blobs[0]
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes().replace(b"unique", b"UNIQUE"))
    empty = server.models_dir / "no-ollama"
    empty.mkdir(exist_ok=True)
    fresh = Serve(server.models_dir, FERRY_OLLAMA_MODELS=empty)
    try:
        status, text = fresh.post("/api/generate", {"model": "corrupt", "prompt": "x",
                                                    "stream": False})
        msg = json.loads(text)["error"]
        digest = blob.name.replace("sha256-", "")
        assert status >= 400 and "sha256" in msg and digest[:12] in msg, (status, msg)
        r = fresh.client.generate(model=STORIES, prompt="x", options={"num_predict": 2})
        assert r.done
    finally:
        fresh.stop()


def test_list_asks_the_running_server(server):
    server.client.create(model="listed", from_=STORIES, stream=False)
    r = run_ferry(server, "list")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    names = [line.split()[0] for line in lines[1:]]
    # What the server's /api/tags lists, in its names (a stored model with its tag).
    tags = [m["name"] for m in json.loads(server.get("/api/tags")[1])["models"]]
    assert sorted(names) == sorted(tags) and "listed:latest" in names
    # No server on the port: the store is read directly (the bare file is marked as such).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_ferry(server, "list", port=port)
    assert r.returncode == 0, r.stderr
    assert "listed:latest" in r.stdout and "(GGUF file)" in r.stdout
