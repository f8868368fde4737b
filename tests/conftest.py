"""Shared fixtures for ferry's end-to-end tests (pytest).

Paths: the build folder comes from FERRY_BUILD_DIR (default build/), ../shared from the repo
root, and the default model from FERRY_MODELS (default ~/.ferry/models), as `make test` sets up.
"""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
BUILD = Path(os.environ.get("FERRY_BUILD_DIR", ROOT / "build"))
if not BUILD.is_absolute():
    BUILD = ROOT / BUILD
MODELS = Path(os.environ.get("FERRY_MODELS", Path.home() / ".ferry" / "models"))
DEFAULT_MODEL = MODELS / "gemma-3-270m-q4_k_m.gguf"


def binary(name: str) -> Path:
    path = BUILD / "bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: build first (make build)")
    return path


def run(args, check=True, **kw):
    """Runs a command, returning CompletedProcess with text stdout/stderr."""
    # `ferry run` reads standard input when it is not a terminal (as `ollama run` does): give
    # it an empty one unless the test sends input.
    if "input" not in kw:
        kw.setdefault("stdin", subprocess.DEVNULL)
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}: {proc.stderr}")
    return proc


def shared_ggufs():
    files = sorted((SHARED / "models").glob("*.gguf")) + sorted((SHARED / "vocab").glob("*.gguf"))
    files += [SHARED / "vocab" / "legacy" / "ggml-vocab-llama.v3-2023.gguf"]
    return files


def all_model_files():
    """Every readable shared GGUF plus the default model (required: make test fetches it)."""
    return shared_ggufs() + [DEFAULT_MODEL]


@pytest.fixture(scope="session")
def ferry():
    return binary("ferry")


@pytest.fixture(scope="session")
def gguf_tool():
    return binary("ferry_gguf_tool")


@pytest.fixture(scope="session")
def default_model():
    if not DEFAULT_MODEL.exists():
        pytest.fail(f"default model {DEFAULT_MODEL} missing: run scripts/fetch-models")
    return DEFAULT_MODEL
