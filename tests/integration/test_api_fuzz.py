"""Schemathesis against the served OpenAPI document of the in-process app, on real Redis.

Every operation gets a bounded number of generated requests, valid (positive) and invalid
(negative). Checks: no 5xx, every answer matches its documented status and schema, and every
error answer has the JSON error shape `{"error": str, "details": list}`.

FUZZ_EXAMPLES (default 40) sets the examples per operation and mode; FUZZ_SEED (default: the
fixed derandomised seed) makes a wider exploratory run reproducible. What fuzzing found is kept
as plain regression tests in tests/integration/test_api_fuzz_regressions.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import Case
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.generation import GenerationMode
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.api.app import create_app
from shared.settings import Settings
from tests.support.seed import ensure_test_types

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "40"))
SEED = os.environ.get("FUZZ_SEED")
STREAMING = {"/api/events"}  # never ends by itself: called with a short read timeout
KNOWN_TYPES = ("noop", "noop", "noop", "image", "email", "webhook")  # noop takes any payload


PICKS = st.lists(st.sampled_from([*KNOWN_TYPES, ""]), min_size=1, max_size=5)


def _known_types(case: Case, picks: list[str]) -> Case:
    """Give generated create bodies a registered type most of the time, so the payload,
    schedule, webhook and timeout get past the type check and reach encoding and Redis."""
    body = case.body
    items = body.get("tasks") if isinstance(body, dict) else None
    targets = items if isinstance(items, list) else [body]
    for item, pick in zip(targets, picks, strict=False):
        if isinstance(item, dict) and isinstance(item.get("type"), str) and pick:
            item["type"] = pick
    return case


def error_shape(ctx: Any, response: Response, case: Case) -> bool | None:
    """Every 4xx/5xx answer is `{"error": "<message>", "details": [...]}`."""
    if response.status_code < 400:
        return None
    try:
        body = response.json()
    except ValueError as exc:
        raise AssertionError(
            f"{response.status_code} without a JSON body: {response.text[:200]!r}"
        ) from exc
    assert isinstance(body, dict), body
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("details"), list), body
    return None


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_shape,
]


@pytest.fixture
def api_schema(settings: Settings, conn: object) -> Iterator[Any]:
    ensure_test_types()
    app = create_app(settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        yield schema
    finally:
        asgi.shutdown_lifespans()  # closes the app's Redis client


def _fuzz(operation: Any, mode: GenerationMode, client: Any) -> None:
    streaming = operation.path in STREAMING
    timeout = 0.2 if streaming else 10

    @hsettings(
        max_examples=min(EXAMPLES, 5) if streaming else EXAMPLES,
        derandomize=SEED is None,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(case=st.builds(_known_types, operation.as_strategy(generation_mode=mode), PICKS))
    def run(case: Case) -> None:
        response = case.call(session=client, timeout=timeout)
        case.validate_response(response, checks=CHECKS)

    if SEED is not None:
        run = seed(int(SEED))(run)
    try:
        run()
    except Unsatisfiable:
        # Nothing in this operation can be made invalid (e.g. a bare string path parameter).
        assert mode is GenerationMode.NEGATIVE, operation.label


def test_every_operation_survives_fuzzing(api_schema: Any) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 9, [op.label for op in operations]
    with asgi.get_client(api_schema.app) as client:
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    _fuzz(operation, mode, client)
                except Exception as exc:
                    exc.add_note(f"while fuzzing {operation.label} ({mode.value})")
                    raise
