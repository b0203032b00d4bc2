"""The OpenAPI document describes every route, and the live API keeps its promises: schemathesis
sends generated requests (a bounded number per operation) with a user key and an admin key,
and no answer may be a 5xx or differ from the documented status codes and schemas."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.fixtures import ApiClient, WorkerProcess

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
QUEUES = ("fetch", "video", "upload", "analyze", "notify")


def test_document_is_public_and_lists_every_route(api_url: str) -> None:
    from api import create_app

    document = requests.get(f"{api_url}/api/v1/openapi.json", timeout=10).json()
    assert document["openapi"].startswith("3.")
    app = create_app()
    # The JSON API and the operations endpoints; the web page's HTML and files are no API.
    api_rules = [
        rule
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/") or rule.rule in ("/livez", "/readyz", "/metrics")
    ]
    assert len(api_rules) >= 18
    for rule in api_rules:
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)  # <path:file> is {file}
        assert path in document["paths"], f"{rule.rule} is not documented"
        for method in rule.methods - {"HEAD", "OPTIONS"}:  # type: ignore[operator]
            documented = document["paths"][path][method.lower()]
            assert documented["responses"], rule.rule
    jobs = document["paths"]["/api/v1/jobs"]
    assert jobs["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/JobRequest"
    )
    assert {"401", "429", "202"} <= set(jobs["post"]["responses"])
    options = document["components"]["schemas"]["JobOptions"]["properties"]
    codecs = options["video_codecs"]["anyOf"][0]["items"]
    assert codecs["enum"] == ["h264", "hevc", "av1"]
    assert options["rate_control"]["anyOf"][0]["enum"] == ["capped_crf", "bitrate"]
    result = document["components"]["schemas"]["JobResult"]["properties"]
    assert {"audio", "subtitles", "dash_url", "renditions"} <= set(result)
    assert "quality" in document["components"]["schemas"]["RenditionOut"]["properties"]
    assert document["paths"]["/api/v1/queue/health"]["get"]["security"] == []
    assert "403" in document["paths"]["/api/v1/queue/stats"]["get"]["responses"]


@pytest.fixture
def every_queue_resumed(admin_client: ApiClient) -> Iterator[None]:
    """Generated requests may pause queues; the rest of the suite needs them all served."""
    yield
    for queue in QUEUES:
        assert admin_client.post("/api/v1/queue/resume", json={"queue": queue}).status_code == 200


def test_api_keeps_its_documented_promises(
    api_url: str, api_key: str, admin_key: str, workers: WorkerProcess, every_queue_resumed: None
) -> None:
    # Driven through schemathesis's Python API rather than its pytest plugin, whose lazy
    # (fixture-loaded) schemas do not run under pytest 9.
    schema = schemathesis.openapi.from_url(f"{api_url}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 18
    for operation in operations:

        @settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy())
        def keeps_promises(case: Any) -> None:
            for key in (api_key, admin_key):
                headers = {"Authorization": f"Bearer {key}"}
                case.call_and_validate(base_url=api_url, headers=headers, checks=CHECKS, timeout=60)

        keeps_promises()
