"""The route registry and the OpenAPI 3.1 document generated from it.

Each view declares, with @operation, who may call it and which pydantic models describe its
query, body and responses. The same declaration drives access control (api/auth.py), so the
document cannot say a route is public while the code demands a key, and the schemas are the
models the views validate with (api/schemas.py, api/responses.py), never a copy beside them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from flask import Blueprint, Flask, current_app, jsonify
from flask.typing import ResponseReturnValue
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from api.responses import ErrorBody

Access = Literal["public", "key", "admin"]
View = TypeVar("View", bound=Callable[..., Any])
REF = "#/components/schemas/{model}"
STANDARD_ERRORS = {
    400: "The request is malformed; the message says where.",
    401: "No API key, or an unknown or revoked one.",
    403: "The route needs an admin key, or the key is not entitled to what the request asks for.",
    404: "No such job, or not yours.",
    409: "The job is not in a state that allows this, or the Idempotency-Key was used for another request.",
    413: "The upload is larger than the server accepts (refused from its Content-Length).",
    415: "The body is not multipart/form-data.",
    422: "The upload is not usable media.",
    429: "Too many submissions for this key (retry after Retry-After), or one of its quotas is used up.",
    503: "A dependency is unavailable.",
}


@dataclass(frozen=True)
class Operation:
    summary: str
    access: Access
    tag: str
    # status -> a model (JSON body), a media type whose body is not JSON (text/event-stream),
    # or None for no body
    responses: Mapping[int, type[BaseModel] | str | None]
    body: type[BaseModel] | None = None
    multipart: bool = False
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    description: str = ""
    extra_models: tuple[type[BaseModel], ...] = field(default=())
    # Takes an Idempotency-Key header (submissions).
    idempotent: bool = False


def operation(
    summary: str,
    *,
    access: Access = "key",
    tag: str,
    responses: Mapping[int, type[BaseModel] | str | None],
    body: type[BaseModel] | None = None,
    multipart: bool = False,
    query: type[BaseModel] | None = None,
    errors: tuple[int, ...] = (),
    description: str = "",
    extra_models: tuple[type[BaseModel], ...] = (),
    idempotent: bool = False,
) -> Callable[[View], View]:
    """Declare a view's contract; 401/403/400/404 are added from access, inputs and path."""
    declared = Operation(
        summary, access, tag, responses, body, multipart, query, errors, description, extra_models, idempotent
    )

    def mark(view: View) -> View:
        view.openapi_operation = declared  # type: ignore[attr-defined]
        return view

    return mark


def operation_of(view: Callable[..., Any] | None) -> Operation | None:
    return getattr(view, "openapi_operation", None)


def _error_statuses(op: Operation, has_path_params: bool) -> set[int]:
    statuses = set(op.errors)
    if op.access != "public":
        statuses.add(401)
    if op.access == "admin":
        statuses.add(403)
    if op.body or op.query or op.multipart:
        statuses.add(400)
    if has_path_params:
        statuses.add(404)
    return statuses


def _models(app: Flask) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    found: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {(ErrorBody, "serialization"): None}
    for view in app.view_functions.values():
        op = operation_of(view)
        if op is None:
            continue
        for model in (op.body, op.query):
            if model is not None:
                found[(model, "validation")] = None
        for shown in (*op.responses.values(), *op.extra_models):
            if isinstance(shown, type):
                found[(shown, "serialization")] = None
    return list(found)


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", []))
    return [
        {"name": name, "in": "query", "required": name in required, "schema": prop}
        for name, prop in schema["properties"].items()
    ]


IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key and request within 24 h answer the first job again (409: another request).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
}


def _response(summary: str, model: type[BaseModel] | str | None, refs: Mapping[Any, Any]) -> dict[str, Any]:
    if model is None:
        return {"description": summary}
    return {"description": summary, "content": _content(model, refs)}


def _content(model: type[BaseModel] | str, refs: Mapping[Any, Any]) -> dict[str, Any]:
    if isinstance(model, str):
        return {model: {"schema": {"type": "object" if model.endswith("json") else "string"}}}
    return {"application/json": {"schema": refs[(model, "serialization")]}}


def build_document(app: Flask, *, title: str, version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every declared route the app serves."""
    models = _models(app)
    refs, definitions = models_json_schema(models, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda rule: rule.rule):
        if rule.endpoint == "static":
            continue
        op = operation_of(app.view_functions[rule.endpoint])
        if op is None:
            # tests/integration/test_openapi.py fails on such a route under /api/ (web pages are no
            # API); serving the rest beats a 500.
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in sorted(rule.arguments)
        ]
        if op.query is not None:
            parameters += _query_parameters(op.query)
        if op.idempotent:
            parameters.append(IDEMPOTENCY_HEADER)
        responses: dict[str, Any] = {
            str(status): _response(op.summary, model, refs) for status, model in op.responses.items()
        }
        for status in sorted(_error_statuses(op, bool(rule.arguments))):
            responses.setdefault(
                str(status),
                {"description": STANDARD_ERRORS[status], "content": _content(ErrorBody, refs)},
            )
        entry: dict[str, Any] = {
            "operationId": rule.endpoint.replace(".", "_"),
            "summary": op.summary,
            "tags": [op.tag],
            "responses": responses,
            "security": [] if op.access == "public" else [{"bearer": []}],
        }
        if op.description:
            entry["description"] = op.description
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None:
            media = "multipart/form-data" if op.multipart else "application/json"
            entry["requestBody"] = {
                "required": True,
                "content": {media: {"schema": op.body.model_json_schema(ref_template=REF)}}
                if op.multipart
                else {media: {"schema": refs[(op.body, "validation")]}},
            }
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(path, {})[method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key from create-key."}
            },
        },
    }


bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
@operation("This document.", access="public", tag="meta", responses={200: "application/json"})
def document() -> ResponseReturnValue:
    # Built on first request, when every blueprint is registered; routes never change after.
    if "conveyor.openapi" not in current_app.extensions:
        current_app.extensions["conveyor.openapi"] = build_document(
            current_app, title="Conveyor", version="1"
        )
    return jsonify(current_app.extensions["conveyor.openapi"])
