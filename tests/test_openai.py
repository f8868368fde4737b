"""OpenAI's API on `ferry serve` (/v1/...): a real server on a free loopback port, driven by the
unchanged PyPI `openai` client (and plain HTTP where the client hides what is checked).

stories260K (no chat template) serves every test; greedy decoding (temperature 0) makes the
streamed and the whole answers comparable.
"""
import json
import signal
import socket
import time

import openai
import pytest

from test_serve import STORIES, Serve, stream_lines
from conftest import SHARED


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("openai-models")
    (d / f"{STORIES}.gguf").symlink_to(SHARED / "models" / "stories260K.gguf")
    return d


@pytest.fixture(scope="module")
def server(models_dir):
    s = Serve(models_dir)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{server.port}/v1", api_key="ferry",
                         max_retries=0, timeout=60)


# A stream that stays open (stories260K needs seconds for this many tokens): ignore_eos is the
# extension llama.cpp's and vLLM's servers take too.
LONG = {"model": STORIES, "prompt": "Once", "max_tokens": 2000, "ignore_eos": True,
        "temperature": 0, "stream": True}

MESSAGES = [{"role": "system", "content": "A story."},
            {"role": "user", "content": [{"type": "text", "text": "Once upon"},
                                         {"type": "text", "text": " a time"}]}]


def test_chat_whole_and_streamed_agree(client):
    whole = client.chat.completions.create(model=STORIES, messages=MESSAGES, temperature=0,
                                           max_tokens=24, seed=1)
    assert whole.id.startswith("chatcmpl-")
    assert whole.object == "chat.completion"
    assert whole.model == STORIES
    assert len(whole.choices) == 1
    choice = whole.choices[0]
    assert choice.index == 0 and choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    u = whole.usage
    assert u.prompt_tokens > 0 and u.completion_tokens > 0
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens

    chunks = list(client.chat.completions.create(model=STORIES, messages=MESSAGES,
                                                 temperature=0, max_tokens=24, seed=1,
                                                 stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert chunks[-1].choices[0].finish_reason == choice.finish_reason
    assert all(c.usage is None for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == choice.message.content


def test_stream_include_usage_and_done(server, client):
    chunks = list(client.chat.completions.create(
        model=STORIES, messages=MESSAGES, temperature=0, max_tokens=5, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens == 5
    assert chunks[-1].usage.total_tokens == (chunks[-1].usage.prompt_tokens + 5)
    assert chunks[-2].choices[0].finish_reason == "length"
    # On the wire: SSE events, the last one [DONE].
    conn, r = stream_lines(server.port, "/v1/chat/completions",
                           {"model": STORIES, "messages": MESSAGES, "stream": True,
                            "max_tokens": 3, "temperature": 0})
    assert r.status == 200 and r.getheader("Content-Type").startswith("text/event-stream")
    body = r.read().decode()
    conn.close()
    events = [e for e in body.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"


def test_max_tokens_length(client):
    for field in ("max_tokens", "max_completion_tokens"):
        r = client.chat.completions.create(model=STORIES, messages=MESSAGES, temperature=0,
                                           **{field: 7})
        assert r.choices[0].finish_reason == "length"
        assert r.usage.completion_tokens == 7


def test_stop_strings(client):
    base = client.chat.completions.create(model=STORIES, messages=MESSAGES, temperature=0,
                                          max_tokens=40).choices[0].message.content
    words = base.split()
    assert len(words) >= 4, base
    stop = " " + words[3]
    cut = base[:base.index(stop)]
    for s in (stop, [stop, "never-in-the-text"]):
        r = client.chat.completions.create(model=STORIES, messages=MESSAGES, temperature=0,
                                           max_tokens=40, stop=s)
        assert r.choices[0].message.content == cut
        assert r.choices[0].finish_reason == "stop"


def test_completions(client):
    whole = client.completions.create(model=STORIES, prompt="Once upon a time", temperature=0,
                                      max_tokens=10)
    assert whole.id.startswith("cmpl-") and whole.object == "text_completion"
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 10
    streamed = list(client.completions.create(model=STORIES, prompt="Once upon a time",
                                              temperature=0, max_tokens=10, stream=True))
    assert "".join(c.choices[0].text for c in streamed) == whole.choices[0].text
    assert streamed[-1].choices[0].finish_reason == "length"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=STORIES, prompt="x", suffix="y")
    assert "suffix" in e.value.body["message"]


def test_models_list_and_retrieve(server, client):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids == [STORIES]
    tags = json.loads(server.get("/api/tags")[1])["models"]
    assert ids == [m["name"] for m in tags]
    m = client.models.retrieve(STORIES)
    assert m.id == STORIES and m.object == "model" and m.owned_by == "library"
    assert m.created > 0
    assert client.models.retrieve(STORIES + ":latest").id == STORIES + ":latest"
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("no-such-model")
    assert e.value.body["type"] == "not_found_error"


def test_unknown_model_404(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert "no-such-model" in e.value.body["message"]
    assert e.value.body["type"] == "not_found_error"


def test_bad_requests_400_name_the_field(server, client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=STORIES, messages=MESSAGES, n=2)
    assert e.value.body["type"] == "invalid_request_error"
    assert e.value.body["message"].startswith("n:")
    cases = [({"temperature": "hot"}, "temperature"), ({"max_tokens": 1.5}, "max_tokens"),
             ({"stop": 5}, "stop"), ({"messages": "hi"}, "messages"),
             ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
              "messages[0].content[0].type"),
             ({"top_p": 2}, "top_p"), ({"stream": "yes"}, "stream")]
    for extra, field in cases:
        body = {"model": STORIES, "messages": MESSAGES, **extra}
        status, text = server.post("/v1/chat/completions", body)
        assert status == 400, (extra, text)
        err = json.loads(text)["error"]
        assert err["message"].startswith(field), (extra, err)
        assert err["type"] == "invalid_request_error"
        assert err["param"] is None and err["code"] is None
    status, text = server.post("/v1/chat/completions", "{not json")
    assert status == 400 and json.loads(text)["error"]["type"] == "invalid_request_error"


def test_embeddings_errors_and_unknown_route(server):
    # /v1/embeddings itself: tests/test_embed.py. Its errors are in OpenAI's shape.
    status, text = server.post("/v1/embeddings", {"model": STORIES})
    assert status == 400
    err = json.loads(text)["error"]
    assert "input" in err["message"] and err["type"] == "invalid_request_error"
    status, text = server.get("/v1/nothing")
    assert status == 404 and json.loads(text)["error"]["type"] == "not_found_error"


def read_event(resp):
    """The next SSE event's data (one `data: ...` line and a blank line)."""
    line = resp.readline().decode()
    assert line.startswith("data: "), line
    assert resp.readline() == b"\n"
    return line[len("data: "):].rstrip("\n")


def test_disconnect_cancels_the_request(server, client):
    client.completions.create(model=STORIES, prompt="Once", max_tokens=1)  # loaded
    before = server.kv_used()
    conn, resp = stream_lines(server.port, "/v1/completions", LONG)
    assert resp.status == 200
    for _ in range(5):
        assert json.loads(read_event(resp))["choices"][0]["finish_reason"] is None
    assert server.kv_used() > before
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    deadline = time.monotonic() + 10
    while server.kv_used() != before:
        assert time.monotonic() < deadline, f"kv blocks used {server.kv_used()} != {before}"
        time.sleep(0.05)
    assert server.requests_running() == 0


def test_error_after_streaming_began(models_dir):
    s = Serve(models_dir)
    try:
        conn, resp = stream_lines(s.port, "/v1/completions", LONG)
        assert resp.status == 200
        json.loads(read_event(resp))  # streaming began
        s.proc.send_signal(signal.SIGTERM)
        assert s.proc.wait(timeout=60) == 0  # a hang guard, not a speed bound
        events = [e for e in resp.read().decode().split("\n\n") if e]
        conn.close()
        assert events[-1] == "data: [DONE]"
        err = json.loads(events[-2][len("data: "):])["error"]
        assert "shutting down" in err["message"] and err["type"] == "server_error"
        assert all("error" not in json.loads(e[6:]) for e in events[:-2])
    finally:
        s.stop()
