"""The app's own OpenAPI schema, fuzzed with schemathesis over real HTTP.

No request may produce a 5xx, and every response must match the schema the app
publishes (status codes, content types, bodies).
"""

from __future__ import annotations

from typing import Any

import httpx
import schemathesis

# Imported lazily by ``from_url``: loaded here, at collection, before any API server
# thread runs. CPython 3.11.7's parser is not safe against a concurrent ``compile``
# in another thread (``SystemError: AST constructor recursion depth mismatch``), and
# pytest compiles this plugin module when it is first imported.
import schemathesis.specs.openapi.adapter.parameters
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import API_KEY, RunningApp


def test_schema_and_docs_are_served(api: RunningApp) -> None:
    document = httpx.get(f"{api.base_url}/schema/openapi.json").json()
    paths = set(document["paths"])
    assert {"/exec", "/upload", "/upload/batch", "/download/{session_id}/{file_id}",
            "/files/{session_id}", "/files/{session_id}/{file_id}",
            "/sessions/{session_id}/objects/{file_id}", "/health", "/health/ready"} <= paths
    assert httpx.get(f"{api.base_url}/schema/swagger").status_code == 200


def test_fuzzed_requests_never_fail_the_server(api: RunningApp) -> None:
    schema = schemathesis.openapi.from_url(f"{api.base_url}/schema/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        def fuzz(case: schemathesis.Case[Any]) -> None:
            case.call_and_validate(headers={"X-API-Key": API_KEY}, timeout=120, checks=[
                not_a_server_error, status_code_conformance, content_type_conformance,
                response_schema_conformance])

        fuzz()
