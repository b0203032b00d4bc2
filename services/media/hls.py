"""The transcode stage's work: plan, run one ffmpeg, measure, write the master and stills;
the outputs go up to the attempt's prefix in the workspace while ffmpeg still writes them."""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from services.captions import first_segment_start, subtitle_playlist, with_timestamp_map
from services.config import Settings
from services.errors import Canceled, DiskFull, TranscodeFailed
from services.media.confine import confine
from services.media.dash import DASH_MANIFEST, Representation, write_dash_manifest
from services.media.ffmpeg import Encoders, SegmentFormat, build_hls_command, run_ffmpeg, subtitle_source_path
from services.media.ladder import (
    DEFAULT_RATE_CONTROL,
    AudioRendition,
    RateControl,
    Rendition,
    SubtitleRendition,
    VideoCodec,
    plan_audio,
    plan_ladder,
    plan_subtitles,
)
from services.media.pictures import (
    PicturePlan,
    build_idet_command,
    interlaced_by_idet,
    needs_idet,
    plan_picture,
)
from services.media.playlists import (
    MASTER_PLAYLIST,
    MEDIA_PLAYLIST,
    Bitrates,
    init_section,
    measure_bitrates,
    parse_media_playlist,
    subtitle_entries,
    with_audio,
    write_master_playlist,
)
from services.media.probe import MediaInfo
from services.media.quality import Scores, Window, measure_scores, plan_windows
from services.media.storyboard import (
    POSTER_FILE,
    SPRITE_FILE,
    VTT_FILE,
    StoryboardPlan,
    plan_storyboard,
    storyboard_vtt,
)
from services.workspace import Workspace
from services.workspace.live import FolderUploader

log = logging.getLogger("conveyor.transcode")

# How often the runner looks at the stop flag; a cancel must end ffmpeg within 2 s of the
# request, and the heartbeat that sets the flag already takes up to one of them.
STOP_POLL_SECONDS = 0.2
# The transcode's share of the stage's progress; quality receipts take the rest.
TRANSCODE_SHARE = 0.9
IDET_TIMEOUT_SECONDS = 60


class SegmentsWritten:
    """Seconds of one rendition complete on disk (segment n is, once n + 1 exists).

    The transcode's progress until the storyboard is done: ffmpeg prints no ``-progress``
    report before every output has written its header, and the sprite's header comes only
    with its last thumbnail, near the end of the video.
    """

    def __init__(
        self, folder: Path, segment_format: SegmentFormat, segment_seconds: int, first: int = 0
    ) -> None:
        self.folder = folder
        self.suffix = ".m4s" if segment_format == "fmp4" else ".ts"
        self.segment_seconds = segment_seconds
        self.first = first  # the first segment's number (a part's continue the one before)
        self.complete = 0

    def __call__(self) -> float:
        while (self.folder / f"seg_{self.first + self.complete + 1:05d}{self.suffix}").exists():
            self.complete += 1
        return float(self.complete * self.segment_seconds)


# Less room than this left on the output's filesystem, after an incomplete output, means the
# disk filled up (ffmpeg's HLS muxer says nothing when a write fails, and exits 0).
FULL_DISK_BYTES = 1024 * 1024


def check_complete(media_dirs: Sequence[Path]) -> None:
    """Every media playlist ffmpeg wrote must be whole: ENDLIST and at least one segment, each
    of which exists. Raised otherwise: `disk_full` (transient) when the disk is full, else
    `transcode_failed`."""
    for media_dir in media_dirs:
        playlist = media_dir / MEDIA_PLAYLIST
        text = playlist.read_text() if playlist.is_file() else ""
        segments = parse_media_playlist(text).segments
        if "#EXT-X-ENDLIST" in text and segments and all((media_dir / s.uri).is_file() for s in segments):
            continue
        usage = shutil.disk_usage(media_dir)
        if usage.free < FULL_DISK_BYTES:
            raise DiskFull(
                f"The disk filled up while ffmpeg wrote {media_dir.name}: {usage.free} bytes left."
            )
        raise TranscodeFailed(f"ffmpeg left {media_dir.name}/{MEDIA_PLAYLIST} incomplete.")


def measure_variant(media_dir: Path) -> Bitrates:
    """Peak and average bit rate of one written variant, from its segments' real sizes."""
    playlist = parse_media_playlist((media_dir / MEDIA_PLAYLIST).read_text())
    sizes = [(s.duration, (media_dir / s.uri).stat().st_size) for s in playlist.segments]
    return measure_bitrates(sizes, playlist.target_duration)


def storyboard_plan_for(info: MediaInfo, settings: Settings) -> StoryboardPlan | None:
    """The storyboard the transcode stage makes for this source (none for audio-only)."""
    if info.video is None:
        return None
    return plan_storyboard(
        info.duration,
        info.video.width,
        info.video.height,
        interval=settings.storyboard_interval_seconds,
        tile_width=settings.storyboard_tile_width,
        columns=settings.storyboard_columns,
    )


def encoders_for(settings: Settings) -> Encoders:
    return Encoders(
        ffmpeg=settings.ffmpeg_path,
        x264_preset=settings.x264_preset,
        x265_preset=settings.x265_preset,
        svtav1_preset=settings.svtav1_preset,
        threads=settings.ffmpeg_threads,
    )


def picture_plan_for(source: Path, info: MediaInfo, settings: Settings) -> PicturePlan | None:
    """What the picture needs; a file that does not declare its field order is asked idet."""
    if info.video is None:
        return None
    detected = False
    if needs_idet(info):
        done = subprocess.run(
            build_idet_command(settings.ffmpeg_path, source, info),
            capture_output=True,
            text=True,
            errors="replace",
            timeout=IDET_TIMEOUT_SECONDS,
            check=False,
            preexec_fn=confine(settings.ffmpeg_memory_limit_bytes),
        )
        # A sample idet cannot read says nothing either way; the transcode reports real errors.
        detected = done.returncode == 0 and interlaced_by_idet(done.stderr)
    return plan_picture(info, detected_interlaced=detected)


def _stills(out_dir: Path, plan: StoryboardPlan | None, duration: float) -> dict[str, Any]:
    # A poster instant past the last video frame (audio outlasting video) yields no poster;
    # the job still has its stream, so a missing still is recorded as absent, not an error.
    poster = POSTER_FILE if (out_dir / POSTER_FILE).is_file() else None
    if plan is None or not (out_dir / SPRITE_FILE).is_file():
        return {"poster": poster, "storyboard": None}
    (out_dir / VTT_FILE).write_text(storyboard_vtt(plan, duration))
    return {"poster": poster, "storyboard": {"vtt": VTT_FILE, "sprite": SPRITE_FILE} | asdict(plan)}


def _rates(measured: Bitrates) -> dict[str, int]:
    """As the master declares them: a video rendition's include its sound."""
    return {"bandwidth": measured.peak, "average_bandwidth": measured.average}


def _write_subtitles(
    out_dir: Path, subtitles: Sequence[SubtitleRendition], mpegts_start: float | None, duration: float
) -> list[dict[str, Any]]:
    """Each source subtitle track as one WebVTT file named by its content (segments are cached
    as immutable) and a one-segment media playlist, like the generated captions."""
    written = []
    for subtitle in subtitles:
        raw = subtitle_source_path(out_dir, subtitle)
        vtt = with_timestamp_map(raw.read_text(errors="replace"), mpegts_start)
        raw.unlink()
        name = f"{hashlib.sha256(vtt.encode()).hexdigest()[:12]}.vtt"
        (out_dir / subtitle.name / name).write_text(vtt)
        (out_dir / subtitle.name / MEDIA_PLAYLIST).write_text(subtitle_playlist(name, duration))
        written.append(
            asdict(subtitle)
            | {"playlist": f"{subtitle.name}/{MEDIA_PLAYLIST}", "vtt": f"{subtitle.name}/{name}"}
        )
    return written


def _dash(
    out_dir: Path,
    info: MediaInfo,
    segment_seconds: int,
    plan: TranscodePlan,
    measured: Sequence[Bitrates],
    audio_measured: Sequence[Bitrates],
    subtitles: Sequence[tuple[SubtitleRendition, str]],
    clock_start: float,
) -> str:
    def representation(name: str, bitrates: Bitrates) -> Representation:
        text = (out_dir / name / MEDIA_PLAYLIST).read_text()
        return Representation(name, init_section(text), parse_media_playlist(text), bitrates)

    manifest = write_dash_manifest(
        info.duration,
        segment_seconds,
        [(r, representation(r.name, m)) for r, m in zip(plan.renditions, measured, strict=True)],
        [(a, representation(a.name, m)) for a, m in zip(plan.audio, audio_measured, strict=True)],
        subtitles,
        clock_start=clock_start,
    )
    (out_dir / DASH_MANIFEST).write_text(manifest)
    return DASH_MANIFEST


def quality_scores(
    source: Path,
    out_dir: Path,
    info: MediaInfo,
    picture: PicturePlan,
    renditions: Sequence[Rendition],
    settings: Settings,
    should_stop: Callable[[], bool],
    *,
    windows: Sequence[Window] | None = None,
    source_offset: float = 0.0,
) -> list[Scores | None]:
    """Each rendition's scores over `windows` (default: the sample of the whole video, for a
    source transcoded whole), or None for all when they cannot be measured: the renditions are
    good whatever the measure says, so a failed measure costs the job only the receipts (a
    cancel or a timeout still ends the stage)."""
    if windows is None:
        windows = quality_windows(info, renditions, settings)
    try:
        scores: list[Scores | None] = list(
            measure_scores(
                settings.ffmpeg_path,
                source,
                info,
                picture,
                renditions,
                out_dir,
                windows,
                source_offset=source_offset,
                timeout=settings.time_limits("transcode")[0],
                memory_limit_bytes=settings.ffmpeg_memory_limit_bytes,
                should_stop=should_stop,
            )
        )
    except (TranscodeFailed, ValueError, KeyError, OSError):
        log.warning("quality receipts could not be measured", exc_info=True)
        scores = []
    return scores or [None] * len(renditions)


def quality_windows(info: MediaInfo, renditions: Sequence[Rendition], settings: Settings) -> list[Window]:
    """The receipts' sample of the whole video, on the renditions' clock."""
    if not renditions:
        return []
    return plan_windows(info.duration, min(r.fps for r in renditions), settings.segment_seconds)


def receipts_of(scores: Sequence[Scores | None]) -> list[dict[str, Any] | None]:
    return [None if score is None else score.receipt() for score in scores]


@dataclass(frozen=True)
class TranscodePlan:
    """Everything a transcode decides before ffmpeg runs; kept on the transcode stage's row
    (its resume state) so that every part, on any host, encodes exactly the same ladder."""

    renditions: tuple[Rendition, ...]
    audio: tuple[AudioRendition, ...]
    subtitles: tuple[SubtitleRendition, ...]
    picture: PicturePlan | None
    storyboard: StoryboardPlan | None
    segment_format: SegmentFormat

    def to_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> TranscodePlan:
        picture, storyboard = record.get("picture"), record.get("storyboard")
        return cls(
            renditions=tuple(Rendition(**r) for r in record["renditions"]),
            audio=tuple(AudioRendition(**a) for a in record["audio"]),
            subtitles=tuple(SubtitleRendition(**t) for t in record["subtitles"]),
            picture=PicturePlan(**picture) if picture else None,
            storyboard=StoryboardPlan(**storyboard) if storyboard else None,
            segment_format=record["segment_format"],
        )


def plan_transcode(
    source: Callable[[], Path],
    settings: Settings,
    *,
    info: MediaInfo,
    requested: Sequence[str] | None,
    segment_format: SegmentFormat = "ts",
    video_codecs: Sequence[VideoCodec] = ("h264",),
    rate_control: RateControl | None = None,
) -> TranscodePlan:
    """The ladder, sound and subtitle tracks, picture and storyboard of a transcode of `info`.
    `source` gives the file itself, asked for only when the picture needs idet (a file that
    does not declare its field order)."""
    picture = None
    if info.video is not None:
        picture = picture_plan_for(source(), info, settings) if needs_idet(info) else plan_picture(info)
    ladder = plan_ladder(
        info, requested, codecs=video_codecs, rate_control=rate_control or DEFAULT_RATE_CONTROL
    )
    return TranscodePlan(
        renditions=tuple(ladder),
        audio=tuple(plan_audio(info)),
        subtitles=tuple(plan_subtitles(info)),
        picture=picture,
        storyboard=storyboard_plan_for(info, settings),
        segment_format=segment_format,
    )


def transcode_to_hls(
    source: Path,
    out_dir: Path,
    settings: Settings,
    *,
    info: MediaInfo,
    requested: Sequence[str] | None,
    segment_format: SegmentFormat = "ts",
    video_codecs: Sequence[VideoCodec] = ("h264",),
    rate_control: RateControl | None = None,
    on_progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    """transcode_whole with the plan made here (see plan_transcode)."""
    plan = plan_transcode(
        lambda: source,
        settings,
        info=info,
        requested=requested,
        segment_format=segment_format,
        video_codecs=video_codecs,
        rate_control=rate_control,
    )
    return transcode_whole(
        source, out_dir, settings, info=info, plan=plan, on_progress=on_progress, should_stop=should_stop
    )


def transcode_whole(
    source: Path,
    out_dir: Path,
    settings: Settings,
    *,
    info: MediaInfo,
    plan: TranscodePlan,
    on_progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    """Write master.m3u8, one folder per video, audio and subtitle rendition, the poster and
    the storyboard (and, for fMP4, manifest.mpd) into out_dir. `info` is the source as the
    fetch stage probed it, within the probe limits.

    Returns what the stage records: the video renditions with their measured bit rates and
    quality receipts, the audio and subtitle renditions, the segment format, what was done
    to the picture and the stills' file names. out_dir is a scratch folder, which its owner
    removes; half a ladder is never recorded (see transcode_job).
    """
    # ffmpeg's HLS muxer makes the rendition folders, but the image and WebVTT muxers none.
    out_dir.mkdir(parents=True, exist_ok=True)
    renditions, audio, subtitles = plan.renditions, plan.audio, plan.subtitles
    segment_format, picture, storyboard = plan.segment_format, plan.picture, plan.storyboard
    for subtitle in subtitles:
        (out_dir / subtitle.name).mkdir(exist_ok=True)
    args = build_hls_command(
        source,
        info,
        renditions,
        out_dir,
        segment_seconds=settings.segment_seconds,
        audio=audio,
        subtitles=subtitles,
        picture=picture,
        encoders=encoders_for(settings),
        segment_format=segment_format,
        storyboard=storyboard,
    )
    first = renditions[0].name if renditions else audio[0].name
    run_ffmpeg(
        args,
        duration=info.duration,
        on_progress=lambda percent: on_progress(percent * TRANSCODE_SHARE),
        should_stop=should_stop,
        timeout=settings.time_limits("transcode")[0],
        memory_limit_bytes=settings.ffmpeg_memory_limit_bytes,
        poll_seconds=STOP_POLL_SECONDS,
        written_seconds=SegmentsWritten(out_dir / first, segment_format, settings.segment_seconds),
    )
    check_complete([out_dir / rendition.name for rendition in renditions])
    measured = [measure_variant(out_dir / rendition.name) for rendition in renditions]
    audio_measured = [measure_variant(out_dir / track.name) for track in audio]
    mpegts_start = (
        first_segment_start(out_dir / renditions[0].name / MEDIA_PLAYLIST)
        if renditions and subtitles
        else None
    )
    receipts: list[dict[str, Any] | None] = [None] * len(renditions)
    if settings.quality_receipts and picture is not None:
        receipts = receipts_of(
            quality_scores(source, out_dir, info, picture, renditions, settings, should_stop)
        )
    output = ladder_output(
        out_dir, info, plan, settings, measured, audio_measured, mpegts_start=mpegts_start, receipts=receipts
    )
    on_progress(100.0)
    return output


def ladder_output(
    out_dir: Path,
    info: MediaInfo,
    plan: TranscodePlan,
    settings: Settings,
    measured: Sequence[Bitrates],
    audio_measured: Sequence[Bitrates],
    *,
    mpegts_start: float | None,
    receipts: Sequence[dict[str, Any] | None],
    clock_start: float = 0.0,
) -> dict[str, Any]:
    """Once every rendition's media playlist is in out_dir (and, from the source, each subtitle
    track's WebVTT, the poster and the sprite): the subtitle renditions, the master, the DASH
    manifest and the storyboard's WebVTT are written there, and what the stage records is
    returned. `clock_start` is where the segments' timeline starts (a stitched job's parts
    keep the source's clock)."""
    renditions, audio, subtitles = plan.renditions, plan.audio, plan.subtitles
    written_subtitles = _write_subtitles(out_dir, subtitles, mpegts_start, info.duration)
    master = write_master_playlist(
        renditions,
        measured,
        audio=list(zip(audio, audio_measured, strict=True)),
        subtitles=subtitle_entries(subtitles),
        fmp4=plan.segment_format == "fmp4",
    )
    (out_dir / MASTER_PLAYLIST).write_text(master)
    dash = None
    if plan.segment_format == "fmp4":
        vtts = [(s, w["vtt"]) for s, w in zip(subtitles, written_subtitles, strict=True)]
        dash = _dash(
            out_dir, info, settings.segment_seconds, plan, measured, audio_measured, vtts, clock_start
        )
    stills = _stills(out_dir, plan.storyboard, info.duration)
    return {
        "renditions": [
            asdict(r) | _rates(with_audio(m, audio_measured)) | {"quality": q}
            for r, m, q in zip(renditions, measured, receipts, strict=True)
        ],
        "audio": [asdict(a) | _rates(m) for a, m in zip(audio, audio_measured, strict=True)],
        "subtitles": written_subtitles,
        "segment_format": plan.segment_format,
        "dash": dash,
        "picture": asdict(plan.picture) if plan.picture is not None else None,
    } | stills


def transcode_job(
    source: Path,
    workspace: Workspace,
    prefix: str,
    scratch: Path,
    settings: Settings,
    *,
    info: MediaInfo,
    plan: TranscodePlan,
    on_progress: Callable[[float], None],
    should_stop: Callable[[], bool],
) -> dict[str, Any]:
    """The transcode of a source of one part, whole, in this attempt: the ladder written into
    scratch and mirrored to `prefix` (the attempt's own) as it is written. Half a ladder is
    never recorded: the stage's output, which names `prefix`, exists only once every file is
    up."""
    out_dir = scratch / "hls"
    out_dir.mkdir()
    with FolderUploader(out_dir, workspace, prefix, should_stop=should_stop) as uploads:
        try:
            output = transcode_whole(
                source,
                out_dir,
                settings,
                info=info,
                plan=plan,
                on_progress=lambda percent: on_progress(min(percent, 99.0)),
                # A failed upload stops ffmpeg now: the attempt cannot succeed any more.
                should_stop=lambda: should_stop() or uploads.failed,
            )
        except Canceled:
            if uploads.error is not None:
                raise uploads.error from None
            raise
        uploads.finish()
    on_progress(100.0)
    return {"prefix": prefix} | output
