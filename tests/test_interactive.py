"""`ferry run MODEL` with no prompt on a terminal: the interactive session, driven through a
pseudo-terminal with pexpect (banner, slash commands, multi-line input, Ctrl-C, Ctrl-D, line
editing and history). Replies are compared with one-shot `ferry run` on the same prompt."""
import os

import pytest

from conftest import SHARED, run

pexpect = pytest.importorskip("pexpect")

STORIES = SHARED / "models" / "stories260K.gguf"
GREEDY = ["--raw", "--local", "--temperature", "0", "--num-predict", "12"]


def spawn(ferry, model, *args, timeout=60):
    env = dict(os.environ, NO_COLOR="1", TERM="xterm")
    env.pop("FERRY_HOST", None)
    child = pexpect.spawn(str(ferry), ["run", str(model), *args], encoding="utf-8",
                          timeout=timeout, env=env)
    child.expect_exact(">>> ")
    return child


def reply(child, line):
    """Sends one line and returns the text printed before the next prompt (newlines as \\n)."""
    child.sendline(line)
    child.expect_exact(">>> ")
    text = child.before.replace("\r\n", "\n")
    # The terminal echoes the line first.
    echoed = line + "\n"
    assert text.startswith(echoed), text
    return text[len(echoed):].strip()


def one_shot(ferry, prompt, *args):
    return run([ferry, "run", STORIES, prompt, *args]).stdout.strip()


def finish(child, code):
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == code, child.before


def test_banner_help_and_bye(ferry):
    child = spawn(ferry, STORIES, "--raw")
    assert "send a message (/? for help)" in child.before
    out = reply(child, "/?")
    for command in ("/set parameter", "/set system", "/show info", "/clear", "/bye", '"""'):
        assert command in out, out
    assert "/show parameters" in reply(child, "/help")
    assert reply(child, "/frobnicate") == "Unknown command '/frobnicate'. Type /? for help"
    finish(child, 0)


def test_a_turn_answers_as_one_shot_run_does(ferry):
    child = spawn(ferry, STORIES, *GREEDY)
    expected = one_shot(ferry, "Once upon a time", *GREEDY)
    assert expected
    assert reply(child, "Once upon a time") == expected
    finish(child, 0)


def test_set_parameter_temperature_0_is_greedy(ferry):
    # Started at the default temperature (0.8, a fresh seed): after /set parameter temperature 0
    # each turn is the greedy reply.
    child = spawn(ferry, STORIES, "--raw", "--local", "--num-predict", "12")
    assert reply(child, "/set parameter temperature 0") == "Set parameter 'temperature' to '0'"
    expected = one_shot(ferry, "Once upon a time", *GREEDY)
    assert reply(child, "Once upon a time") == expected
    assert reply(child, "Once upon a time") == expected
    params = reply(child, "/show parameters")
    assert "temperature         0\n" in params.replace("\r", "") + "\n", params
    bad = reply(child, "/set parameter temperature hot")
    assert bad.startswith("Couldn't set parameter:") and "hot" in bad
    bad = reply(child, "/set parameter warmth 1")
    assert "unknown" in bad.lower() and "temperature" in bad
    finish(child, 0)


def test_multi_line_message(ferry):
    child = spawn(ferry, STORIES, *GREEDY)
    child.sendline('"""Once upon')
    child.expect_exact("... ")
    out = reply(child, 'a time"""')
    assert out == one_shot(ferry, "Once upon\na time", *GREEDY)
    finish(child, 0)


def test_history_recalls_the_last_line(ferry):
    child = spawn(ferry, STORIES, *GREEDY)
    first = reply(child, "Once upon a time")
    child.send("\x1b[A")  # Up
    child.expect_exact("Once upon a time")
    child.send("\r")
    child.expect_exact(">>> ")
    again = child.before.replace("\r\n", "\n").strip()
    assert again == first
    finish(child, 0)


def test_set_system_show_and_clear(ferry):
    # A file without a chat template runs raw; the system message goes in front of the prompt.
    child = spawn(ferry, STORIES, "--local", "--temperature", "0", "--num-predict", "12")
    assert reply(child, "/set system Once") == "Set system message."
    assert reply(child, "/show system") == "Once"
    assert reply(child, "upon a time") == one_shot(ferry, "Once\n\nupon a time", *GREEDY)
    assert "No chat template" in reply(child, "/show template")
    info = reply(child, "/show info")
    assert "architecture" in info and "llama" in info and "context length" in info
    assert reply(child, "/clear") == "Cleared session context"
    finish(child, 0)


def test_ctrl_c_at_the_prompt_keeps_the_session_and_ctrl_d_ends_it(ferry):
    child = spawn(ferry, STORIES, *GREEDY)
    child.send("half a line")
    child.sendintr()
    child.expect_exact("Use Ctrl + d or /bye to exit.")
    child.expect_exact(">>> ")
    # The half line was dropped: the next turn is only what follows.
    assert reply(child, "Once upon a time") == one_shot(ferry, "Once upon a time", *GREEDY)
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_ctrl_c_stops_a_reply(ferry, default_model):
    # Gemma 3 270M writes on at ~30 tokens/s here: still writing after 3 s, stopped by Ctrl-C,
    # and the session goes on.
    child = spawn(ferry, default_model, "--raw", "--local", "--temperature", "0",
                  "--num-predict", "4000", "--num-ctx", "4096", timeout=120)
    child.sendline("Once upon a time")
    with pytest.raises(pexpect.TIMEOUT):
        child.expect_exact(">>> ", timeout=3)
    child.sendintr()
    child.expect_exact(">>> ", timeout=60)
    child.sendline("/bye")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_a_failed_turn_makes_the_exit_code_1_and_num_ctx_reloads(ferry):
    long_prompt = "Once upon a time there was a little dog named Tim."
    child = spawn(ferry, STORIES, "--raw", "--local", "--temperature", "0", "--num-predict", "4",
                  "--num-ctx", "8")
    child.sendline(long_prompt)
    child.expect("the prompt does not fit: num_ctx is 8")
    child.expect_exact(">>> ")
    # A larger num_ctx loads the model again; the same prompt then fits.
    assert reply(child, "/set parameter num_ctx 64") == "Set parameter 'num_ctx' to '64'"
    assert reply(child, long_prompt) == one_shot(
        ferry, long_prompt, "--raw", "--local", "--temperature", "0", "--num-predict", "4",
        "--num-ctx", "64")
    finish(child, 1)


@pytest.mark.parametrize("no_color", [False, True])
def test_colour_only_on_a_terminal_and_never_with_no_color(ferry, no_color):
    # A warning (threads capped) and the dim "no chat template" line: coloured on a terminal,
    # plain with NO_COLOR, and plain when stderr is a pipe.
    args = ["run", str(STORIES), "Once upon a time", "--local", "--num-predict", "2",
            "--num-thread", "1000"]
    env = dict(os.environ, TERM="xterm")
    env.pop("FERRY_HOST", None)
    env.pop("NO_COLOR", None)
    if no_color:
        env["NO_COLOR"] = "1"
    out = pexpect.run(str(ferry), args=args, env=env, encoding="utf-8", timeout=60)
    assert "hardware threads" in out and "no chat template" in out, out
    assert ("\x1b[" in out) != no_color, repr(out)
    piped = run([ferry, *args], env=env)
    assert "no chat template" in piped.stderr and "\x1b[" not in piped.stderr
