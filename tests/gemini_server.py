"""A local stand-in for Google's REST endpoints that Conveyor's google-genai calls reach.

It speaks the wire protocol the real client uses (read from google-genai's source):

* Gemini Developer API, key in ``x-goog-api-key``:
  ``POST /upload/{v}/files`` (resumable start: answers ``X-Goog-Upload-URL``), then
  ``POST`` to that URL with ``X-Goog-Upload-Command: upload, finalize`` (answers
  ``X-Goog-Upload-Status: final`` and ``{"file": …}``); ``GET|DELETE /{v}/files/{id}``;
  ``POST /{v}/models/{model}:generateContent``.
* Vertex AI, ``Authorization: Bearer``:
  ``POST /{v}/projects/{p}/locations/{l}/publishers/google/models/{m}:predictLongRunning`` and
  ``…:fetchPredictOperation`` with ``{"operationName": …}``; the finished operation carries
  the video inline as ``bytesBase64Encoded``, as Vertex does when no storageUri is set.

Switches make it misbehave the ways Google does; every request is recorded for assertions.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from services.config import Settings, get_settings
from tests.local_http import running

API_KEY = "fake-gemini-key"
ACCESS_TOKEN = "fake-vertex-token"
PROJECT = "conveyor-test"
TIMESTAMP = "2025-01-01T00:00:00.000000Z"
TRANSCRIPT = [
    {"start": 0.2, "end": 1.4, "text": "Welcome to the test pattern."},
    {"start": 1.5, "end": 2.8, "text": "A tone plays at 440 hertz."},
]
ANALYSIS = {
    "summary": "A moving colour test pattern with a steady tone.",
    "language": "en",
    "language_name": "English",
    "key_moments": [{"time": 0.0, "description": "The pattern appears."}],
    "transcript": TRANSCRIPT,
    "flags": [],
}
SAFETY_MESSAGE = "The prompt could not be submitted: it violates Vertex AI's usage guidelines (safety)."

UPLOAD = re.compile(r"^/upload/(?P<version>v\w+)/files$")
FILE = re.compile(r"^/(?P<version>v\w+)/(?P<name>files/[\w-]+)$")
GENERATE = re.compile(r"^/(?P<version>v\w+)/models/(?P<model>[\w.-]+):generateContent$")
VERTEX_MODEL = re.compile(
    r"^/(?P<version>v\w+)/(?P<resource>projects/[\w-]+/locations/[\w-]+/publishers/google/models/[\w.-]+)"
    r":(?P<method>predictLongRunning|fetchPredictOperation)$"
)


@dataclass
class Switches:
    processing_polls: int = 1  # files.get answers PROCESSING this many times, then ACTIVE
    never_active: bool = False
    rate_limited: int = 0  # 429s to answer generateContent / predictLongRunning before serving
    safety: bool = False  # generateContent blocks the prompt; Veo withholds the video
    pending_polls: int = 1  # fetchPredictOperation says "not done" this many times
    answer: dict[str, Any] = field(default_factory=lambda: dict(ANALYSIS))


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # parsed JSON, or the byte count of an upload chunk


class FakeGoogle(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, video: bytes) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.video = video
        self.switches = Switches()
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self.uploads: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, Any]] = {}
        self.received: dict[str, bytes] = {}  # file name -> uploaded bytes, kept after delete
        self.deleted: list[str] = []
        self.operations: dict[str, int] = {}  # operation name -> polls so far

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def reset(self) -> None:
        """Well-behaved again and nothing recorded, for the next test."""
        with self.lock:
            self.switches = Switches()
            self.requests.clear()
            self.received.clear()
            self.deleted.clear()

    def calls(self, method: str, pattern: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]


class Handler(BaseHTTPRequestHandler):
    server: FakeGoogle

    def log_message(self, format: str, *args: object) -> None:
        pass

    # -- plumbing ---------------------------------------------------------------------------

    def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, grpc_status: str, message: str) -> None:
        self._reply(status, {"error": {"code": status, "message": message, "status": grpc_status}})

    def _read(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _record(self, body: Any) -> None:
        with self.server.lock:
            headers = {k.lower(): v for k, v in self.headers.items()}
            self.server.requests.append(Request(self.command, self.path, headers, body))

    def _authorized_key(self) -> bool:
        if self.headers.get("x-goog-api-key") == API_KEY:
            return True
        self._error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.")
        return False

    def _authorized_token(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {ACCESS_TOKEN}":
            return True
        self._error(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.")
        return False

    def _rate_limited(self) -> bool:
        with self.server.lock:
            if self.server.switches.rate_limited <= 0:
                return False
            self.server.switches.rate_limited -= 1
        self._error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).")
        return True

    # -- routing ----------------------------------------------------------------------------

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        raw = self._read()
        if (match := UPLOAD.match(url.path)) and "upload_id" in parse_qs(url.query):
            self._record(len(raw))
            return self._upload_chunk(parse_qs(url.query)["upload_id"][0], raw, match["version"])
        body = json.loads(raw or b"{}")
        self._record(body)
        if match := UPLOAD.match(url.path):
            return self._upload_start(match["version"])
        if match := GENERATE.match(url.path):
            return self._generate_content(body)
        if (match := VERTEX_MODEL.match(url.path)) and match["method"] == "predictLongRunning":
            return self._predict_long_running(match["resource"], body)
        if match := VERTEX_MODEL.match(url.path):
            return self._fetch_operation(body)
        self._error(404, "NOT_FOUND", f"No route for POST {url.path}")

    def do_GET(self) -> None:
        self._record(None)
        match = FILE.match(urlsplit(self.path).path)
        if match is None:
            return self._error(404, "NOT_FOUND", "No such route.")
        if not self._authorized_key():
            return None
        with self.server.lock:
            file = self.server.files.get(match["name"])
            if file is None:
                return self._error(
                    403, "PERMISSION_DENIED", "You do not have permission or it does not exist."
                )
            file["polls"] += 1
            switches = self.server.switches
            if not switches.never_active and file["polls"] > switches.processing_polls:
                file["state"] = "ACTIVE"
            self._reply(200, _public(file))

    def do_DELETE(self) -> None:
        self._record(None)
        match = FILE.match(urlsplit(self.path).path)
        if match is None:
            return self._error(404, "NOT_FOUND", "No such route.")
        if not self._authorized_key():
            return None
        with self.server.lock:
            if self.server.files.pop(match["name"], None) is None:
                return self._error(
                    403, "PERMISSION_DENIED", "You do not have permission or it does not exist."
                )
            self.server.deleted.append(match["name"])
        self._reply(200, {})

    # -- Files API --------------------------------------------------------------------------

    def _upload_start(self, version: str) -> None:
        if not self._authorized_key():
            return
        if self.headers.get("X-Goog-Upload-Protocol") != "resumable" or (
            self.headers.get("X-Goog-Upload-Command") != "start"
        ):
            return self._error(400, "INVALID_ARGUMENT", "Only resumable uploads are served here.")
        upload_id = uuid.uuid4().hex
        with self.server.lock:
            self.server.uploads[upload_id] = {
                "size": int(self.headers["X-Goog-Upload-Header-Content-Length"]),
                "mime": self.headers["X-Goog-Upload-Header-Content-Type"],
                "data": bytearray(),
            }
        location = (
            f"{self.server.base_url}/upload/{version}/files?upload_id={upload_id}&upload_protocol=resumable"
        )
        self._reply(200, None, {"X-Goog-Upload-URL": location, "X-Goog-Upload-Status": "active"})

    def _upload_chunk(self, upload_id: str, chunk: bytes, version: str) -> None:
        command = self.headers.get("X-Goog-Upload-Command", "")
        with self.server.lock:
            upload = self.server.uploads.get(upload_id)
            if upload is None or int(self.headers.get("X-Goog-Upload-Offset", -1)) != len(upload["data"]):
                return self._error(400, "INVALID_ARGUMENT", "Unknown upload or wrong offset.")
            upload["data"] += chunk
            if "finalize" not in command:
                return self._reply(200, None, {"X-Goog-Upload-Status": "active"})
            if len(upload["data"]) != upload["size"]:
                return self._error(400, "INVALID_ARGUMENT", "Size does not match the declared length.")
            file_id = uuid.uuid4().hex[:12]
            name = f"files/{file_id}"
            data = bytes(upload.pop("data"))
            self.server.received[name] = data
            self.server.files[name] = {
                "name": name,
                "mimeType": upload["mime"],
                "sizeBytes": str(len(data)),
                "createTime": TIMESTAMP,
                "updateTime": TIMESTAMP,
                "expirationTime": TIMESTAMP,
                "sha256Hash": base64.b64encode(hashlib.sha256(data).hexdigest().encode()).decode(),
                "uri": f"{self.server.base_url}/{version}/{name}",
                "state": "PROCESSING",
                "source": "UPLOADED",
                "polls": 0,
            }
            file = _public(self.server.files[name])
        self._reply(200, {"file": file}, {"X-Goog-Upload-Status": "final"})

    # -- generateContent --------------------------------------------------------------------

    def _generate_content(self, body: dict[str, Any]) -> None:
        if not self._authorized_key() or self._rate_limited():
            return
        config = body.get("generationConfig", {})
        if config.get("responseMimeType") != "application/json" or "responseSchema" not in config:
            return self._error(400, "INVALID_ARGUMENT", "This stand-in only answers with a response schema.")
        # Proto3 JSON accepts a field's original name as well as its camelCase one, and
        # google-genai 3.6.1 sends fileData's fields as file_uri / mime_type.
        uris = [
            _field(_field(part, "file_data"), "file_uri")
            for content in body.get("contents", [])
            for part in content.get("parts", [])
            if _field(part, "file_data")
        ]
        with self.server.lock:
            states = [
                self.server.files.get(urlsplit(uri).path.split("/", 2)[-1], {}).get("state") for uri in uris
            ]
            switches = self.server.switches
        if not uris or any(state != "ACTIVE" for state in states):
            return self._error(400, "FAILED_PRECONDITION", "The File is not in an ACTIVE state.")
        usage = {"promptTokenCount": 900, "candidatesTokenCount": 120, "totalTokenCount": 1020}
        if switches.safety:
            return self._reply(200, {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage})
        text = json.dumps(switches.answer)
        self._reply(
            200,
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": [{"text": text}]},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": usage,
                "modelVersion": "fake-gemini",
            },
        )

    # -- Veo on Vertex ----------------------------------------------------------------------

    def _predict_long_running(self, resource: str, body: dict[str, Any]) -> None:
        if not self._authorized_token() or self._rate_limited():
            return
        if not body.get("instances", [{}])[0].get("prompt"):
            return self._error(400, "INVALID_ARGUMENT", "instances[0].prompt is required.")
        name = f"{resource}/operations/{uuid.uuid4()}"
        with self.server.lock:
            self.server.operations[name] = 0
        self._reply(200, {"name": name})

    def _fetch_operation(self, body: dict[str, Any]) -> None:
        if not self._authorized_token():
            return
        name = body.get("operationName", "")
        with self.server.lock:
            if name not in self.server.operations:
                return self._error(404, "NOT_FOUND", f"Operation {name} not found.")
            self.server.operations[name] += 1
            polls = self.server.operations[name]
            switches = self.server.switches
        if polls <= switches.pending_polls:
            return self._reply(200, {"name": name})
        response: dict[str, Any] = {
            "@type": "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse"
        }
        if switches.safety:
            response |= {"raiMediaFilteredCount": 1, "raiMediaFilteredReasons": [SAFETY_MESSAGE]}
        else:
            video = base64.b64encode(self.server.video).decode()
            response |= {"videos": [{"bytesBase64Encoded": video, "mimeType": "video/mp4"}]}
        self._reply(200, {"name": name, "done": True, "response": response})


def _field(message: dict[str, Any], name: str) -> Any:
    head, *rest = name.split("_")
    return message.get(head + "".join(word.title() for word in rest), message.get(name))


def _public(file: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in file.items() if k != "polls"}


@contextmanager
def serving(video: bytes) -> Iterator[FakeGoogle]:
    with running(FakeGoogle(video)) as server:
        yield server


def settings_for(server: FakeGoogle, **overrides: Any) -> Settings:
    """This process's settings pointed at the stand-in, for calling the services directly."""
    return get_settings().model_copy(
        update={
            "google_api_key": API_KEY,
            "gemini_base_url": server.base_url,
            "vertex_base_url": server.base_url,
            "google_access_token": ACCESS_TOKEN,
            "google_cloud_project": PROJECT,
            "veo_poll_initial_seconds": 0.05,
            **overrides,
        }
    )


def worker_env(server: FakeGoogle) -> dict[str, str]:
    """The same, for a worker process started with tests.fixtures.start_worker."""
    return {
        "GOOGLE_API_KEY": API_KEY,
        "GEMINI_BASE_URL": server.base_url,
        "VERTEX_BASE_URL": server.base_url,
        "GOOGLE_ACCESS_TOKEN": ACCESS_TOKEN,
        "GOOGLE_CLOUD_PROJECT": PROJECT,
        "VEO_POLL_INITIAL_SECONDS": "0.05",
    }
