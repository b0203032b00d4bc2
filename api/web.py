"""The web page: one HTML shell for every client-side route, its modules and hls.js.

hls.js is served from the npm package `npm ci` installed (pinned in package-lock.json), never
copied into the repository."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, make_response, render_template, send_from_directory
from flask.typing import ResponseReturnValue

HLS_DIST = Path(__file__).resolve().parent.parent / "node_modules" / "hls.js" / "dist"

# The page holds an API key, so no inline or third-party script may run. Playlists, segments,
# storyboards and captions come from the S3 origin (presigned URLs), which the page cannot know
# in advance: connect, image and media sources stay open.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "worker-src 'self' blob:",
        "connect-src *",
        "img-src * data: blob:",
        "media-src * blob:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)

bp = Blueprint("web", __name__, template_folder="templates", static_folder="static", static_url_path="/web")


@bp.get("/")
@bp.get("/jobs/<job_id>")
def page(job_id: str | None = None) -> ResponseReturnValue:
    """The same shell for every route; the page's router reads the path."""
    response = make_response(render_template("index.html"))
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.get("/vendor/hls.js/<path:filename>")
def hls_js(filename: str) -> ResponseReturnValue:
    return send_from_directory(HLS_DIST, filename)
