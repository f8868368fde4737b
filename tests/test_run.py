"""`ferry run` and `ferry perplexity` end to end."""
import json
import re

import pytest

from conftest import ROOT, SHARED, run

STORIES = SHARED / "models" / "stories260K.gguf"
STORY_TXT = ROOT / "tests" / "data" / "story.txt"
FIXTURES = ROOT / "tests" / "reference" / "fixtures"


def test_raw_completion_streams_the_story(ferry):
    out = run([ferry, "run", STORIES, "Once upon a time", "--raw", "--temperature", "0",
               "--num-predict", "12"]).stdout
    assert out.startswith(", there was a little girl named Lily.")


def test_empty_raw_prompt_starts_after_bos(ferry):
    out = run([ferry, "run", STORIES, "--raw", "", "--temperature", "0", "--num-predict",
               "20"]).stdout
    assert out.startswith("Once upon a time, there was a little girl named Lily.")


def test_verbose_prints_timings(ferry):
    proc = run([ferry, "run", STORIES, "Once", "--raw", "--temperature", "0", "--num-predict", "4",
                "--verbose"])
    assert "prompt:" in proc.stderr and "generation:" in proc.stderr and "tok/s" in proc.stderr


def test_each_load_logs_one_line_with_the_plan_and_the_allocation(ferry):
    out = run([ferry, "run", str(STORIES), "Once", "--raw", "--num-predict", "2", "--verbose",
               "--num-ctx", "512"])
    loads = [line for line in out.stderr.splitlines() if " info load " in line]
    assert len(loads) == 1, out.stderr
    line = loads[0]
    assert "plan: cpu [layers 0-4+output+input]" in line
    for part in ("weights", "kv", "compute", "host", "sampling", "predicted", "headroom"):
        assert part in line, line
    # What was allocated is what was planned: the same total on both sides of the line.
    planned = line.split("plan: cpu [layers 0-4+output+input] ")[1].split(" (")[0]
    allocated = line.split("allocated cpu ")[1].split(" (")[0]
    assert planned == allocated, line


def test_seed_makes_sampling_reproducible(ferry):
    args = [ferry, "run", STORIES, "Once upon a time", "--raw", "--temperature", "1.2",
            "--num-predict", "30", "--seed"]
    a = run(args + ["7"]).stdout
    b = run(args + ["7"]).stdout
    c = run(args + ["8"]).stdout
    assert a == b and a != c


def test_stop_string_and_context_limit(ferry):
    out = run([ferry, "run", STORIES, "Once upon a time", "--raw", "--temperature", "0",
               "--stop", "girl"]).stdout
    assert out.strip() == ", there was a little"
    proc = run([ferry, "run", STORIES, "Once upon a time", "--raw", "--temperature", "0",
                "--num-ctx", "12"])
    assert "context of 12 tokens is full" in proc.stderr


def test_prompt_longer_than_context_is_an_error(ferry):
    proc = run([ferry, "run", STORIES, "Once upon a time there was a dog " * 10, "--raw",
                "--num-ctx", "16"], check=False)
    assert proc.returncode == 1
    assert "num_ctx is 16" in proc.stderr and "never truncates" in proc.stderr


@pytest.mark.parametrize("args,needle", [
    (["--num-ctx", "0"], "num_ctx 0"),
    (["--num-ctx", "99999999999"], "num_ctx"),
    (["--kv-type", "q5_k"], "kv-type"),
    (["--top-p", "3"], "top_p"),
    (["--num-batch", "-1"], "num_batch"),
])
def test_absurd_options_are_clear_errors(ferry, args, needle):
    proc = run([ferry, "run", STORIES, "Hi", "--raw", "--num-predict", "2", *args], check=False)
    assert proc.returncode != 0
    assert needle in proc.stderr, proc.stderr


def test_unknown_model_and_unsupported_architecture(ferry):
    proc = run([ferry, "run", "no-such-model", "Hi"], check=False)
    assert proc.returncode == 1 and "not found" in proc.stderr
    proc = run([ferry, "run", SHARED / "vocab" / "ggml-vocab-bert-bge.gguf", "Hi"], check=False)
    assert proc.returncode == 1 and "architecture 'bert' is not supported" in proc.stderr


def test_piped_stdin_is_one_prompt(ferry):
    # As `ollama run`: standard input that is not a terminal is the prompt, all of it (lines
    # included), in front of any prompt words; /bye in it is text, not a command.
    args = ["--raw", "--local", "--temperature", "0", "--num-predict", "6"]
    piped = run([ferry, "run", STORIES, *args], input="Once upon a time\n/bye\n")
    direct = run([ferry, "run", STORIES, "Once upon a time\n/bye\n", *args])
    assert piped.stdout == direct.stdout and piped.stdout.strip()
    both = run([ferry, "run", STORIES, "a", "time", *args], input="Once upon")
    assert both.stdout == run([ferry, "run", STORIES, "Once upon a time", *args]).stdout
    empty = run([ferry, "run", STORIES, *args], check=False)
    assert empty.returncode == 1 and "the prompt is empty" in empty.stderr


@pytest.mark.parametrize("model,n_ctx,fixture", [
    (STORIES, 128, "perplexity-stories260K.json"),
    (None, 256, "perplexity-gemma3-270m-q4_k_m.json"),
])
def test_perplexity_within_one_percent_of_llama_cpp(ferry, default_model, model, n_ctx, fixture):
    ref = json.loads((FIXTURES / fixture).read_text())
    # The fixtures follow llama-perplexity exactly (tokenized with BOS, each window's first
    # token replaced by BOS): the same token count, the same windows, 1% on the value.
    proc = run([ferry, "perplexity", model or default_model, STORY_TXT, "--num-ctx", str(n_ctx)])
    out = proc.stdout
    ppl = float(out.split()[1])
    assert abs(ppl - ref["perplexity"]) / ref["perplexity"] < 0.01, (ppl, ref)
    assert f"over {ref['n_scored']} scored tokens ({ref['n_tokens']} tokens," in out
    # Each window's running value on stderr, as llama-perplexity prints it: [1]v1,[2]v2,...
    windows = ref["n_tokens"] // n_ctx
    progress = re.findall(r"\[(\d+)\]([0-9.]+),", proc.stderr)
    assert [int(i) for i, _ in progress] == list(range(1, windows + 1)), proc.stderr
    assert abs(float(progress[-1][1]) - ppl) < 1e-3 * ppl


def test_default_model_answers_a_question(ferry, default_model):
    out = run([ferry, "run", default_model, "Question: What is the capital of France?\nAnswer:",
               "--raw", "--temperature", "0", "--num-predict", "16", "--stop", "\n"]).stdout
    assert "Paris" in out


def test_usage_errors_exit_2_with_the_ferry_prefix(ferry):
    for args in (["nosuch"], [], ["run"], ["run", STORIES, "--no-such-flag"],
                 ["plan", STORIES, "--ctx"]):
        proc = run([ferry, *args], check=False)
        assert proc.returncode == 2, (args, proc.returncode, proc.stderr)
        assert proc.stderr.startswith("ferry: "), proc.stderr
    assert "unknown command 'nosuch'" in run([ferry, "nosuch"], check=False).stderr


def test_help_command_and_defaults(ferry):
    top = run([ferry, "help"]).stdout
    assert "Usage: ferry" in top and "run" in top and "plan" in top
    text = run([ferry, "help", "run"]).stdout
    assert text == run([ferry, "run", "--help"]).stdout
    for default in ("--temperature,--temp FLOAT=0.8", "--top-k INT=40", "--top-p FLOAT=0.9",
                    "--repeat-penalty FLOAT=1.1", "--num-ctx INT=2048"):
        assert default in text, default
    assert run([ferry, "help", "nosuch"], check=False).returncode == 2


def test_prompt_words_short_flags_and_stop_escapes(ferry):
    # `ferry run M Once upon a time` as ollama run takes it; -n/-s/-c/-t as llama.cpp's.
    words = run([ferry, "run", STORIES, "Once", "upon", "a", "time", "--raw", "--temperature",
                 "0", "-n", "6", "-s", "3", "-c", "128", "-t", "1", "--local"]).stdout
    quoted = run([ferry, "run", STORIES, "Once upon a time", "--raw", "--temperature", "0",
                  "--num-predict", "6", "--local"]).stdout
    assert words == quoted and words.strip()
    # "\n" typed in a shell is two characters; --stop reads it as a newline. Greedy stories260K
    # writes a paragraph break within 200 tokens.
    long = run([ferry, "run", STORIES, "Once upon a time", "--raw", "--temperature", "0",
                "--num-predict", "200", "--local"]).stdout
    assert "\n" in long.rstrip("\n")
    cut = run([ferry, "run", STORIES, "Once upon a time", "--raw", "--temperature", "0",
               "--num-predict", "200", "--stop", "\\n", "--local"]).stdout
    assert cut.rstrip("\n") == long[:long.index("\n")]


def test_a_file_without_a_chat_template_runs_raw_and_says_so(ferry, default_model):
    # stories260K has no template and no architecture default; the default Gemma file is a base
    # model whose architecture has a chat format, but it has no template either: both run raw,
    # as `ollama run` does with {{ .Prompt }}, with one line on stderr saying so.
    for model in (STORIES, default_model):
        chat = run([ferry, "run", model, "Once upon a time", "--temperature", "0", "-n", "6",
                    "--local"])
        raw = run([ferry, "run", model, "Once upon a time", "--temperature", "0", "-n", "6",
                   "--local", "--raw"])
        assert chat.stdout == raw.stdout
        assert "has no chat template: running raw" in chat.stderr
        assert "\x1b" not in chat.stderr  # piped: no dimming
    # --template applies a built-in format; with --raw it is a usage mistake, as --system is.
    templated = run([ferry, "run", default_model, "Hi", "--temperature", "0", "-n", "4",
                     "--local", "--template", "gemma"])
    assert "running raw" not in templated.stderr
    assert "unknown template 'nope'" in run([ferry, "run", default_model, "Hi", "--local",
                                             "--template", "nope"], check=False).stderr
    for extra in (["--system", "Be brief."], ["--template", "gemma"]):
        proc = run([ferry, "run", STORIES, "Hi", "--raw", "--local", *extra], check=False)
        assert proc.returncode == 1 and "no effect with --raw" in proc.stderr


def test_perplexity_help_lists_only_the_flags_it_uses(ferry):
    out = run([ferry, "perplexity", "--help"]).stdout
    for flag in ("--num-ctx", "--num-batch", "--num-thread", "--kv-type"):
        assert flag in out, out
    for flag in ("--temperature", "--top-k", "--seed", "--stop", "--num-predict"):
        assert flag not in out, out


def test_llama_cpp_style_flags(ferry):
    # llama-cli's habits: -m MODEL -p PROMPT -n -c -t -s -b --temp; perplexity's -m and -f.
    words = run([ferry, "run", STORIES, "Once", "upon", "a", "time", "--raw", "--local",
                 "--num-predict", "8", "--temperature", "0"]).stdout
    short = run([ferry, "run", "-m", STORIES, "-p", "Once upon a time", "--raw", "--local",
                 "-n", "8", "--temp", "0", "-c", "256", "-t", "1", "-s", "3", "-b", "16"]).stdout
    assert words.strip() and short == words
    a = run([ferry, "perplexity", "-m", STORIES, "-f", STORY_TXT, "-c", "128"]).stdout
    b = run([ferry, "perplexity", STORIES, STORY_TXT, "--num-ctx", "128"]).stdout
    assert a == b and a.startswith("perplexity ")
