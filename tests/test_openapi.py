"""ferry's Ollama API against Ollama's OpenAPI spec (../shared/api/ollama-openapi.yaml), with
schemathesis: requests generated from the spec (valid and invalid ones) for the endpoints that
are safe to fuzz on a shared test server, each answer checked for schema conformance of the
documented (2xx) responses, a JSON content type, and no 5xx.

/api/generate, /api/chat and /api/embed are fuzzed too, with fewer examples (a num_ctx above
the trained context is capped, so no generated option makes a request long). Not fuzzed:
/api/create, /api/delete (it would delete the fixtures), /api/pull and /api/push (501 by design:
there is no registry).
"""
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance, response_schema_conformance)

from conftest import SHARED  # noqa: E402
from test_serve import STORIES, Serve  # noqa: E402

SPEC = SHARED / "api" / "ollama-openapi.yaml"
schema = schemathesis.openapi.from_path(str(SPEC)).include(
    path_regex=r"^/api/(tags|ps|version|show|copy)$")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("openapi-models")
    (d / f"{STORIES}.gguf").symlink_to(SHARED / "models" / "stories260K.gguf")
    (d / "no-ollama").mkdir()
    s = Serve(d, FERRY_OLLAMA_MODELS=d / "no-ollama")
    s.client.generate(model=STORIES, prompt="")  # loaded: /api/ps has a model to describe
    yield s
    s.stop()


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_conforms_to_ollamas_spec(case, server):
    case.call_and_validate(
        base_url=f"http://127.0.0.1:{server.port}",
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance])


# The generating endpoints too, now that a num_ctx above the model's trained context is capped
# there (2048 for stories260K): no generated option can make one request run long. Fewer
# examples, since a request that names the model generates up to a full context.
generating = schemathesis.openapi.from_path(str(SPEC)).include(
    path_regex=r"^/api/(generate|chat|embed|embeddings)$")


@generating.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_generating_endpoints_conform(case, server):
    case.call_and_validate(
        base_url=f"http://127.0.0.1:{server.port}",
        checks=[not_a_server_error, response_schema_conformance, content_type_conformance])
