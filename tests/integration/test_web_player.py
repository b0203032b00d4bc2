"""The web page in headless Chromium (Debian's, driven by Playwright): sign in, upload a clip
with a progress bar, watch the job succeed live over SSE, then play it with hls.js; and a
Gemini-analysed job's transcript and captions (against tests/gemini_server.py's fake)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, expect, sync_playwright
from sqlalchemy.orm import Session, sessionmaker

from api.web import HLS_DIST
from services.apikeys import set_entitlements
from services.config import get_settings
from services.storage import make_s3_client
from tests.fixtures import REPO, WorkerPool, WorkerProcess, make_key, start_worker, stop_worker
from tests.gemini_server import TRANSCRIPT, serving, worker_env
from tests.media import make_clip, make_multilingual_clip

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO / "tests" / "artifacts"
# Every wait's bound, in ms: generous, so a loaded machine never fails the test (nothing here
# asserts on speed).
WAIT_MS = 180_000


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: scripts/bootstrap.sh installs it"
    assert (HLS_DIST / "hls.min.mjs").exists(), "hls.js is missing: run `npm ci` (bootstrap does)"
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=str(CHROMIUM),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser_context: BrowserContext) -> Iterator[Page]:
    page = browser_context.new_page()
    page.set_default_timeout(WAIT_MS)
    expect.set_options(timeout=WAIT_MS)
    yield page
    page.close()


def sign_in(page: Page, api_key: str) -> None:
    page.fill("#api-key", api_key)
    page.click("#sign-in-form button[type=submit]")
    expect(page.locator("#view-home")).to_be_visible()


def submit_and_open(page: Page, clip: Path, renditions: tuple[str, ...], backend: str) -> str:
    """Upload through the form, wait for the list to show the job succeeded, open its page."""
    for name in ("240p", "360p", "480p", "720p", "1080p"):
        page.set_checked(f"input[name=rendition][value='{name}']", name in renditions)
    page.check(f"input[name=backend][value={backend}]")
    page.set_input_files("#file-input", clip)
    # A mark on the window proves, later, that the list updated without the page reloading.
    page.evaluate("window.sameDocument = true")
    page.click("#submit-button")

    expect(page.locator("#upload-percent")).to_have_text("100%")
    assert page.locator("#upload-bar").evaluate("bar => bar.value") == 100
    row = page.locator(".job-row").first
    expect(row).to_have_attribute("data-status", "succeeded")
    assert page.evaluate("window.sameDocument") is True
    expect(row.locator(".percent")).to_have_text("100%")
    job_id = row.get_attribute("data-job-id")
    assert job_id

    row.locator("a").click()
    expect(page.locator("#job-status")).to_have_text("succeeded")
    return job_id


def test_upload_follow_and_play_in_the_browser(
    page: Page,
    api_url: str,
    api_key: str,
    workers: WorkerProcess,
    tmp_path: Path,
) -> None:
    clip = make_clip(tmp_path / "browser-clip.mp4", width=1280, height=720, seconds=3)
    errors: list[str] = []

    def console_error(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", console_error)
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))

    page.goto(api_url)
    assert page.evaluate("""MediaSource.isTypeSupported('video/mp4; codecs="avc1.64001f,mp4a.40.2"')""")

    page.fill("#api-key", "not-a-key")
    page.click("#sign-in-form button[type=submit]")
    expect(page.locator("#sign-in-error")).to_have_text("That key is unknown or revoked.")
    errors.clear()  # the browser logs the refused request above as a console error

    sign_in(page, api_key)
    assert page.evaluate("sessionStorage.getItem('conveyor.apiKey')") == api_key
    assert page.evaluate("localStorage.length") == 0

    job_id = submit_and_open(page, clip, ("240p", "360p", "720p"), "local")
    assert f"{api_url}/api/v1/jobs/{job_id}/events" in requested
    expect(page).to_have_url(f"{api_url}/jobs/{job_id}")
    stages = page.locator(".timeline .stage")
    expect(stages).to_have_count(5)
    for name in ("fetch", "transcode", "upload", "analyze"):
        expect(page.locator(f".stage[data-stage={name}]")).to_have_class("stage stage-succeeded")
    expect(page.locator(".analysis-card")).to_contain_text("Loudness (EBU R128)")

    page.wait_for_function("() => window.conveyorPlayer?.levels.length > 0")
    heights = page.evaluate("window.conveyorPlayer.levels.map(level => level.height)")
    assert sorted(heights) == [240, 360, 720]
    labels = page.locator(".quality option").all_inner_texts()
    assert [label.split(" ")[0] for label in labels] == ["Auto", "720p", "360p", "240p"], labels

    # The player reads the playlists from the API (playback links) and the segments from S3,
    # whose CORS set-up allowed it.
    settings = get_settings()
    cors = make_s3_client(settings).get_bucket_cors(Bucket=settings.s3_bucket)["CORSRules"]
    assert cors[0]["AllowedOrigins"] == ["*"]
    assert any("/api/v1/playback/" in url and url.endswith("master.m3u8") for url in requested)

    page.click(".player .play")
    # Functions, not expression strings: Playwright evals strings, which the page's CSP forbids.
    page.wait_for_function("() => document.querySelector('video').currentTime > 0")
    started = page.evaluate("document.querySelector('video').currentTime")
    page.wait_for_function("t => document.querySelector('video').currentTime > t", arg=started)

    expect(page.locator(".player")).to_have_attribute("data-storyboard", "ready")
    page.hover(".seek")
    expect(page.locator(".preview .thumb")).to_be_visible()
    assert "url(" in page.locator(".preview .thumb").evaluate("thumb => thumb.style.backgroundImage")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "job-page.png", full_page=True)
    assert errors == []


def test_switch_sound_language_and_subtitles_and_read_each_renditions_quality(
    page: Page, api_url: str, api_key: str, workers: WorkerProcess, tmp_path: Path
) -> None:
    clip = make_multilingual_clip(tmp_path / "two-languages.mkv", subtitle="Hello from the source")
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    page.goto(api_url)
    sign_in(page, api_key)
    submit_and_open(page, clip, ("240p", "360p"), "local")
    page.wait_for_function("() => window.conveyorPlayer?.levels.length > 0")

    # Each rendition says how good it looks, on the page and in the quality switcher.
    renditions = page.locator(".renditions li")
    expect(renditions).to_have_count(2)
    for text in renditions.locator(".quality").all_inner_texts():
        assert text.startswith("VMAF "), text
    labels = page.locator(".quality option").all_inner_texts()
    assert all("VMAF" in label for label in labels[1:]), labels

    sound = page.locator(".sound")
    expect(sound.locator("option")).to_have_text(["English", "Français"])
    expect(sound).to_have_value("0")
    page.click(".player .play")
    page.wait_for_function("() => document.querySelector('video').currentTime > 0")
    sound.select_option("1")
    page.wait_for_function("() => window.conveyorPlayer.audioTrack === 1")
    # hls.js fetched the French rendition's playlist and segments, and playback goes on.
    page.wait_for_function(
        "() => performance.getEntriesByType('resource').some(e => /audio-1\\/seg_\\d+\\.ts/.test(e.name))"
    )
    assert any("/audio-1/index.m3u8" in url for url in requested)
    at = page.evaluate("document.querySelector('video').currentTime")
    page.wait_for_function("t => document.querySelector('video').currentTime > t", arg=at)

    captions = page.locator(".captions")
    expect(captions.locator("option")).to_have_text(["Off", "English"])
    expect(captions).to_have_value("-1")  # the source's track is not a default one
    page.evaluate("document.querySelector('video').currentTime = 0")
    captions.select_option("0")
    page.wait_for_function(
        "text => [...document.querySelector('video').textTracks].some("
        "track => track.mode === 'showing' && [...(track.cues || [])].some(cue => cue.text === text))",
        arg="Hello from the source",
    )
    captions.select_option("-1")
    page.wait_for_function(
        "() => ![...document.querySelector('video').textTracks].some(track => track.mode === 'showing')"
    )


def test_a_sound_only_upload_plays_its_audio_rendition(
    page: Page, api_url: str, api_key: str, workers: WorkerProcess, tmp_path: Path
) -> None:
    sound = tmp_path / "talk.m4a"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         "sine=frequency=440:sample_rate=44100:duration=3", "-c:a", "aac", str(sound)],
        check=True,
    )  # fmt: skip
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.goto(api_url)
    sign_in(page, api_key)
    submit_and_open(page, sound, ("240p",), "local")
    # The master's one variant is the default sound track itself: hls.js plays it.
    page.wait_for_function("() => window.conveyorPlayer?.levels.length === 1")
    page.click(".player .play")
    page.wait_for_function("() => document.querySelector('video').currentTime > 0.5")
    expect(page.locator(".player .error")).to_be_hidden()
    assert errors == []


def test_a_job_in_parts_shows_them_and_plays_across_every_join(
    page: Page, api_url: str, api_key: str, video_hosts: list[WorkerProcess], tmp_path: Path
) -> None:
    """13 s transcoded in parts of 4 s on two hosts: the timeline lists the parts with the host
    of each, and hls.js plays through the joins at 4 s and 8 s without an error."""
    clip = make_clip(tmp_path / "parts.mp4", width=640, height=360, seconds=13, extra=("-preset", "veryfast"))
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(api_url)
    sign_in(page, api_key)
    job_id = submit_and_open(page, clip, ("240p", "360p"), "local")

    parts = page.locator(".stage[data-stage=transcode] .parts .part")
    expect(parts).to_have_count(4)
    hosts = {worker.name for worker in video_hosts}
    for worker in parts.locator(".part-worker").all_inner_texts():
        assert worker.split("@")[0] in hosts, worker
    expect(parts.last.locator(".part-span")).to_have_text("sound")

    page.wait_for_function("() => window.conveyorPlayer?.levels.length > 0")
    page.click(".player .play")
    page.wait_for_function("() => document.querySelector('video').currentTime > 0")
    for join in (4, 8):
        page.evaluate("t => { document.querySelector('video').currentTime = t; }", join - 0.5)
        page.wait_for_function("t => document.querySelector('video').currentTime > t", arg=join + 0.5)
    quality = page.evaluate("document.querySelector('video').getVideoPlaybackQuality().totalVideoFrames")
    assert quality > 0
    assert errors == [], (job_id, errors)


# After every test that uses the default worker: this module's Gemini worker replaces it.
@pytest.fixture(scope="module")
def gemini_worker(
    worker_pool: WorkerPool, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """A worker whose Gemini is tests/gemini_server.py's fake; it takes the default worker's place
    (both would compete for the same queues), which later tests get back from the pool."""
    veo_clip = make_clip(tmp_path_factory.mktemp("web-veo") / "veo.mp4", seconds=1)
    with serving(veo_clip.read_bytes()) as google:
        worker_pool.stop_default()
        worker = start_worker("web-gemini", env=worker_env(google))
        yield worker
        stop_worker(worker)


def test_gemini_analysis_and_captions_in_the_browser(
    page: Page, api_url: str, sessions: sessionmaker[Session], gemini_worker: WorkerProcess, tmp_path: Path
) -> None:
    # Only a key entitled to send its videos to Google may ask for gemini.
    key = make_key(sessions, "gemini-tenant")
    with sessions.begin() as session:
        set_entitlements(session, key[:12], {"analysis_backends": ["local", "gemini"]})
    clip = make_clip(tmp_path / "talk.mp4", width=640, height=360, seconds=3)
    page.goto(api_url)
    sign_in(page, key)
    submit_and_open(page, clip, ("240p", "360p"), "gemini")

    analysis = page.locator(".analysis-card")
    expect(analysis).to_contain_text("Backend: gemini")
    # Each line starts with its time as m:ss (a button that seeks the player there).
    lines = [f"0:{int(cast(float, segment['start'])):02d} {segment['text']}" for segment in TRANSCRIPT]
    expect(analysis.locator(".transcript li")).to_have_text(lines)

    captions = page.locator(".captions")
    expect(captions.locator("option")).to_have_text(["Off", "English"])
    # The playlist marks its first track DEFAULT: hls.js shows it, and the switcher says so.
    expect(captions).to_have_value("0")
    page.click(".player .play")
    page.wait_for_function(
        "text => [...document.querySelector('video').textTracks].some("
        "track => track.mode === 'showing' && [...(track.cues || [])].some(cue => cue.text === text))",
        arg=TRANSCRIPT[0]["text"],
    )
    captions.select_option("-1")
    page.wait_for_function(
        "() => ![...document.querySelector('video').textTracks].some(track => track.mode === 'showing')"
    )
