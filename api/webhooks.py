"""Webhooks per tenant: endpoints (create, list, delete, rotate their secret), the secret that
signs a job's own webhook_url, and each job's messages (list, redeliver)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, request
from flask.typing import ResponseReturnValue
from kombu.exceptions import OperationalError

from api.auth import caller, visible_job
from api.db import db
from api.errors import ApiError
from api.openapi import operation
from api.responses import EndpointList, EndpointSecret, TenantSecret, WebhookMessages, send
from api.schemas import EndpointRequest, RedeliverRequest, parse_model
from services.config import Settings
from services.webhooks.endpoints import (
    create_endpoint,
    delete_endpoint,
    endpoint_to_dict,
    list_endpoints,
    owned_endpoint,
)
from services.webhooks.messages import job_messages, redeliver_messages
from services.webhooks.secrets import rotate_secret, secret_from_salt, tenant_salts
from tasks.webhooks import deliver

bp = Blueprint("webhooks", __name__)
log = logging.getLogger("conveyor.api")


def _secret(salt: str) -> str:
    settings: Settings = current_app.extensions["conveyor.settings"]
    return secret_from_salt(settings.secret_key, salt)


@bp.post("/webhook-endpoints")
@operation(
    "Register an endpoint for your jobs' events; its signing secret is shown once, here.",
    tag="webhooks",
    body=EndpointRequest,
    responses={201: EndpointSecret},
    errors=(409,),
)
def create() -> ResponseReturnValue:
    order = parse_model(EndpointRequest, request.get_json(silent=True))
    session = db()
    endpoint, salt = create_endpoint(session, caller().id, order.url, order.events)
    session.commit()
    return send(EndpointSecret, endpoint_to_dict(endpoint) | {"secret": _secret(salt)}, 201)


@bp.get("/webhook-endpoints")
@operation("Your webhook endpoints (never their secrets).", tag="webhooks", responses={200: EndpointList})
def index() -> ResponseReturnValue:
    endpoints = list_endpoints(db(), caller().id)
    return send(EndpointList, {"endpoints": [endpoint_to_dict(endpoint) for endpoint in endpoints]})


@bp.delete("/webhook-endpoints/<endpoint_id>")
@operation(
    "Delete an endpoint; what it had not received yet is not sent.", tag="webhooks", responses={204: None}
)
def remove(endpoint_id: str) -> ResponseReturnValue:
    session = db()
    delete_endpoint(session, owned_endpoint(session, caller().id, endpoint_id))
    session.commit()
    return "", 204


@bp.post("/webhook-endpoints/<endpoint_id>/rotate")
@operation(
    "A new signing secret; the previous one keeps signing beside it for 24 h.",
    tag="webhooks",
    responses={200: EndpointSecret},
)
def rotate(endpoint_id: str) -> ResponseReturnValue:
    session = db()
    endpoint = owned_endpoint(session, caller().id, endpoint_id)
    secret, ends = rotate_secret(session, caller().id, endpoint.id)
    session.commit()
    body = endpoint_to_dict(endpoint) | {"secret": _secret(secret.salt), "previous_secret_expires_at": ends}
    return send(EndpointSecret, body)


@bp.get("/webhook-secret")
@operation(
    "The secret that signs the webhooks sent to your jobs' own webhook_url.",
    tag="webhooks",
    responses={200: TenantSecret},
)
def tenant_secret() -> ResponseReturnValue:
    session = db()
    current = tenant_salts(session, caller().id)[0]
    session.commit()
    return send(TenantSecret, {"secret": _secret(current)})


@bp.post("/webhook-secret/rotate")
@operation(
    "A new secret for your jobs' webhook_url; the previous one keeps signing beside it for 24 h.",
    tag="webhooks",
    responses={200: TenantSecret},
)
def rotate_tenant_secret() -> ResponseReturnValue:
    session = db()
    tenant_salts(session, caller().id)
    secret, ends = rotate_secret(session, caller().id, None)
    session.commit()
    return send(TenantSecret, {"secret": _secret(secret.salt), "previous_secret_expires_at": ends})


@bp.get("/jobs/<job_id>/webhooks")
@operation(
    "The job's webhook messages, one per event and target, each with its attempts.",
    tag="webhooks",
    responses={200: WebhookMessages},
)
def messages(job_id: str) -> ResponseReturnValue:
    job = visible_job(job_id)
    return send(WebhookMessages, {"messages": job_messages(db(), job.id)})


@bp.post("/jobs/<job_id>/webhooks/redeliver")
@operation(
    "Send the job's messages (or one, by message_id) again now, with a fresh retry schedule.",
    tag="webhooks",
    body=RedeliverRequest,
    responses={202: WebhookMessages},
)
def redeliver(job_id: str) -> ResponseReturnValue:
    job = visible_job(job_id)
    raw: Any = request.get_json(silent=True) if request.data else {}
    order = parse_model(RedeliverRequest, raw)
    session = db()
    due = redeliver_messages(session, job.id, order.message_id)
    session.commit()
    if order.message_id is not None and not due:
        raise ApiError(
            "not_found", f"Job {job_id} has no message {order.message_id} that can be sent again now."
        )
    for message_id in due:
        try:
            deliver.delay(message_id)
        except (OperationalError, OSError):
            # The periodic sweep sends due messages anyway.
            log.warning("broker unreachable; the webhook sweep will send it", extra={"job_id": str(job.id)})
            break
    return send(WebhookMessages, {"messages": job_messages(session, job.id)}, 202)
