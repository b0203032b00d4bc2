"""The API image serves a working page. There is no Docker engine here, so the image is read,
not built: the build context is listed as Docker lists it (every file under the repository,
minus what .dockerignore excludes, exceptions and all), Dockerfile.api's COPY lines place
those files in /app, its `web` stage runs `npm ci` on package-lock.json, and every module the
page loads must then be in the image."""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path, PurePosixPath

from api.web import HLS_DIST

ROOT = Path(__file__).resolve().parents[2]
APP = PurePosixPath("/app")
IMPORT = re.compile(r"""(?:import|export)\s[^"';]*?from\s*["']([^"']+)["']|import\s*["']([^"']+)["']""")
VENDOR_URL = re.compile(r"""["'](/vendor/hls\.js/[^"']+)["']""")


def _pattern(text: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go's filepath.Match plus `**`) as a regex on relative paths."""
    out, i = "", 0
    text = text.strip().strip("/")
    while i < len(text):
        if text.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif text.startswith("**", i):
            out, i = out + ".*", i + 2
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return re.compile(out + "$")


def dockerignore(root: Path) -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (root / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), _pattern(line.removeprefix("!"))))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for negated, pattern in rules:
        if any(pattern.match(candidate) for candidate in candidates):
            verdict = not negated
    return verdict


def build_context(root: Path) -> set[str]:
    rules = dockerignore(root)
    return {
        path.relative_to(root).as_posix()
        for path in root.rglob("*")
        if path.is_file()
        and ".git" not in path.relative_to(root).parts[:1]
        and not excluded(path.relative_to(root).as_posix(), rules)
    }


def stages(dockerfile: str) -> dict[str, list[str]]:
    """Stage name (or its index) -> its instructions, continuation lines joined."""
    found: dict[str, list[str]] = {}
    current = ""
    for line in re.sub(r"\\\n", " ", dockerfile).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            words = line.split()
            current = words[3] if len(words) > 3 and words[2].upper() == "AS" else str(len(found))
            found[current] = []
        found[current].append(line)
    return found


def image_files(root: Path) -> set[PurePosixPath]:
    """The files Dockerfile.api's last stage holds under /app."""
    context = build_context(root)
    built = stages((root / "Dockerfile.api").read_text())
    *_, final = built.values()
    files: set[PurePosixPath] = set()
    workdir = PurePosixPath("/")
    for line in final:
        words = shlex.split(line)
        if words[0].upper() == "WORKDIR":
            workdir = workdir / words[1]
        if words[0].upper() != "COPY":
            continue
        sources_at, *sources, dest = words[1:]
        origin = sources_at.removeprefix("--from=") if sources_at.startswith("--from=") else None
        sources = sources if origin else [sources_at, *sources]
        target = workdir / dest
        if origin is None:
            for source in sources:
                for path in context:
                    if path == source:
                        files.add(target / PurePosixPath(path).name if dest.endswith("/") else target)
                    elif path.startswith(source.rstrip("/") + "/"):
                        files.add(target / PurePosixPath(path).relative_to(source))
            continue
        # Only the web stage's node_modules comes from another stage: it is what `npm ci` makes of
        # the lock that stage copied from the context; the local node_modules is that (bootstrap
        # stamps it with the lock's digest).
        web = " ".join(built[origin])
        assert "package-lock.json" in web and "npm ci" in web, f"stage {origin} does not run npm ci"
        assert {"package.json", "package-lock.json"} <= context
        lock_digest = hashlib.sha256((root / "package-lock.json").read_bytes()).hexdigest()
        assert (root / "node_modules" / ".package-lock.sha256").read_text().strip() == lock_digest
        [source] = sources
        assert source.rstrip("/").endswith("node_modules")
        for path in (root / "node_modules").rglob("*"):
            if path.is_file():
                files.add(target / path.relative_to(root / "node_modules").as_posix())
    return files


def page_modules(root: Path) -> set[PurePosixPath]:
    """Every file the page loads, by where the API serves it from (relative to the repository)."""
    static = root / "api" / "static"
    vendor = HLS_DIST.relative_to(root)
    html = (root / "api" / "templates" / "index.html").read_text()
    entry = re.findall(r"""filename='(js/[^']+)'""", html)
    assert entry, "the page loads no module"
    wanted: list[str] = [f"/web/{name}" for name in entry]
    found: set[PurePosixPath] = set()
    while wanted:
        url = wanted.pop()
        if url.startswith("/vendor/hls.js/"):
            found.add(PurePosixPath(vendor.as_posix()) / url.removeprefix("/vendor/hls.js/"))
            continue
        relative = url.removeprefix("/web/")
        path = PurePosixPath("api/static") / relative
        if path in found:
            continue
        found.add(path)
        text = (static / relative).read_text()
        for match in IMPORT.finditer(text):
            target = match[1] or match[2]
            if target.startswith("/"):
                wanted.append(target)
            else:
                wanted.append("/web/" + str(PurePosixPath(relative).parent / target).replace("/./", "/"))
        wanted += VENDOR_URL.findall(text)
    return {PurePosixPath(str(p).replace("/./", "/")) for p in found}


def _normal(path: PurePosixPath) -> PurePosixPath:
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            parts.pop()
        elif part != ".":
            parts.append(part)
    return PurePosixPath(*parts)


def test_the_context_excludes_local_state_but_keeps_what_the_build_needs() -> None:
    context = build_context(ROOT)
    assert not any(path.startswith(("node_modules/", ".venv/", ".git/")) for path in context)
    assert not any("__pycache__" in path for path in context)
    assert {"package.json", "package-lock.json", "requirements.lock", "api/templates/index.html"} <= context
    assert ".env.example" in context or not (ROOT / ".env.example").exists()


def test_every_module_the_page_imports_is_in_the_api_image() -> None:
    modules = {_normal(path) for path in page_modules(ROOT)}
    assert any(path.name == "hls.min.mjs" for path in modules)
    assert any(path.name == "hls.worker.js" for path in modules)
    files = image_files(ROOT)
    missing = sorted(str(path) for path in modules if APP / path not in files)
    assert not missing, f"the API image lacks what the page loads: {missing}"
