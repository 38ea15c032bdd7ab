"""Video probing, transcoding and thumbnails with PyAV (FFmpeg's libraries).

Nothing here knows about Celery or HTTP: :func:`probe` tells whether a file is a video, and
:func:`transcode` turns it into an H.264/AAC MP4 plus JPEG thumbnails, calling back with
progress between frames so the caller can report it or stop the work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import av.error
from av.video.reformatter import VideoReformatter

logger = logging.getLogger(__name__)

OUTPUT_VIDEO = "video.mp4"
AUDIO_RATE = 48000


class NotAVideo(ValueError):
    """The file cannot be opened as a container with a decodable video stream.

    ``str()`` names the file; ``reason`` describes what is wrong without any path, for messages
    that reach a client.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class TranscodeCancelled(Exception):
    """The progress callback asked to stop."""


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe` learns about a file."""

    duration: float
    width: int
    height: int
    video_codec: str
    frame_rate: float
    frames: int
    audio_codec: str | None
    container: str

    def to_json(self) -> dict[str, Any]:
        """Return the fields as a JSON-ready dict."""
        return asdict(self)


# Called with (frames done, frames expected); returns False to stop the transcode.
ProgressCallback = Callable[[int, int], bool]


def probe(path: Path) -> VideoInfo:
    """Open ``path`` and describe its first video stream.

    :raises NotAVideo: when FFmpeg cannot open the file or it holds no video stream.
    """
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise NotAVideo(f"{path.name} contains no video stream", "no video stream")
            video = container.streams.video[0]
            if not video.codec_context.width or not video.codec_context.height:
                raise NotAVideo(
                    f"{path.name} has a video stream without a frame size",
                    "the video stream has no frame size",
                )
            audio = container.streams.audio[0] if container.streams.audio else None
            rate = video.average_rate or video.guessed_rate or Fraction(25)
            duration = _duration(container, video)
            frames = video.frames or int(round(duration * float(rate)))
            return VideoInfo(
                duration=round(duration, 3),
                width=video.codec_context.width,
                height=video.codec_context.height,
                video_codec=video.codec_context.name,
                frame_rate=round(float(rate), 3),
                frames=frames,
                audio_codec=audio.codec_context.name if audio is not None else None,
                container=container.format.name,
            )
    except av.error.FFmpegError as exc:
        # str(exc) ends with the file's full path, which must not reach a client.
        reason = exc.strerror or type(exc).__name__
        raise NotAVideo(f"{path.name} is not a readable video: {reason}", reason) from exc
    except UnicodeDecodeError as exc:
        reason = "its metadata is not valid UTF-8"
        raise NotAVideo(f"{path.name} is not a readable video: {reason}", reason) from exc


def _duration(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def target_size(width: int, height: int, target_height: int) -> tuple[int, int]:
    """Return the output size at ``target_height``, keeping the aspect ratio.

    H.264 with 4:2:0 chroma needs even sizes, so both are rounded to even numbers. A source
    smaller than the target keeps its own height: upscaling adds bytes, not detail.
    """
    out_height = min(target_height, height)
    out_height -= out_height % 2
    out_width = int(round(width * out_height / height / 2)) * 2
    return max(out_width, 2), max(out_height, 2)


@dataclass(frozen=True)
class TranscodeResult:
    """The outputs written by :func:`transcode`."""

    video: str
    thumbnails: list[str]
    width: int
    height: int
    frames: int


def transcode(
    source: Path,
    out_dir: Path,
    *,
    height: int,
    thumbnails: int,
    info: VideoInfo,
    preset: str = "veryfast",
    crf: int = 23,
    on_progress: ProgressCallback | None = None,
) -> TranscodeResult:
    """Transcode ``source`` to ``out_dir/video.mp4`` (H.264/AAC) and write thumbnails.

    Thumbnails ``thumb_01.jpg`` ... are taken from the decoded frames nearest to ``thumbnails``
    evenly spaced instants, in the same decoding pass as the transcode.

    :raises TranscodeCancelled: when ``on_progress`` returns ``False``; partial files remain
        in ``out_dir`` for the caller to remove.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    width, out_height = target_size(info.width, info.height, height)
    expected = max(info.frames, 1)
    instants = [info.duration * (i + 0.5) / thumbnails for i in range(thumbnails)]
    thumb_names: list[str] = []

    with (
        av.open(str(source), metadata_errors="ignore") as src,
        av.open(str(out_dir / OUTPUT_VIDEO), "w", format="mp4") as dst,
    ):
        in_video = src.streams.video[0]
        in_video.thread_type = "AUTO"
        rate = in_video.average_rate or in_video.guessed_rate or Fraction(25)
        out_video = dst.add_stream("libx264", rate=rate)
        out_video.width = width
        out_video.height = out_height
        out_video.pix_fmt = "yuv420p"
        out_video.options = {"preset": preset, "crf": str(crf)}
        out_video.thread_type = "AUTO"

        in_audio = src.streams.audio[0] if src.streams.audio else None
        out_audio = None
        resampler = None
        if in_audio is not None:
            out_audio = dst.add_stream("aac", rate=AUDIO_RATE)
            out_audio.layout = "stereo"
            resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)

        streams = [in_video] + ([in_audio] if in_audio is not None else [])
        # One reformatter for the whole stream keeps one scaler context: frame.reformat()
        # would build a new one for every frame.
        scaler = VideoReformatter()
        done = 0
        for packet in src.demux(*streams):
            for frame in _decode(packet):
                if isinstance(frame, av.VideoFrame):
                    scaled = scaler.reformat(
                        frame, width=width, height=out_height, format="yuv420p"
                    )
                    scaled.pts = frame.pts
                    scaled.time_base = frame.time_base
                    dst.mux(out_video.encode(scaled))
                    _take_thumbnails(frame, instants, out_dir, thumb_names)
                    done += 1
                    if on_progress is not None and not on_progress(done, expected):
                        raise TranscodeCancelled()
                elif resampler is not None and out_audio is not None:
                    for chunk in resampler.resample(frame):
                        dst.mux(out_audio.encode(chunk))

        dst.mux(out_video.encode(None))
        if out_audio is not None and resampler is not None:
            for chunk in resampler.resample(None):
                dst.mux(out_audio.encode(chunk))
            dst.mux(out_audio.encode(None))

    return TranscodeResult(
        video=OUTPUT_VIDEO, thumbnails=thumb_names, width=width, height=out_height, frames=done
    )


def _decode(packet: av.Packet) -> list[av.VideoFrame | av.AudioFrame]:
    try:
        return packet.decode()
    except av.error.InvalidDataError:
        # A damaged packet loses its frames, as the ffmpeg command line does.
        logger.warning("skipped an undecodable packet at pts %s", packet.pts)
        return []


def _take_thumbnails(
    frame: av.VideoFrame, instants: list[float], out_dir: Path, names: list[str]
) -> None:
    if not instants or frame.time is None:
        return
    while instants and frame.time >= instants[0]:
        instants.pop(0)
        name = f"thumb_{len(names) + 1:02d}.jpg"
        write_jpeg(frame, out_dir / name)
        names.append(name)


def write_jpeg(frame: av.VideoFrame, path: Path) -> None:
    """Encode one frame as a JPEG file with FFmpeg's MJPEG encoder."""
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width = frame.width
    encoder.height = frame.height
    encoder.pix_fmt = "yuvj420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"qscale": "3"}
    image = frame.reformat(format="yuvj420p")
    image.pts = 0
    packets = list(encoder.encode(image)) + list(encoder.encode(None))
    path.write_bytes(b"".join(bytes(p) for p in packets))


def generate_clip(
    path: Path, *, seconds: float = 3.0, width: int = 640, height: int = 360, fps: int = 25
) -> None:
    """Write a synthetic H.264/AAC MP4 from FFmpeg's ``testsrc2`` pattern and a 440 Hz tone.

    Tests, the benchmark and demos use it, so no sample video has to ship with the repository.
    """
    pattern = f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}"
    tone = f"sine=frequency=440:sample_rate={AUDIO_RATE}:duration={seconds}"
    with (
        av.open(pattern, format="lavfi") as video_src,
        av.open(tone, format="lavfi") as audio_src,
        av.open(str(path), "w", format="mp4") as container,
    ):
        video = container.add_stream("libx264", rate=fps)
        video.width = width
        video.height = height
        video.pix_fmt = "yuv420p"
        video.options = {"preset": "ultrafast"}
        audio = container.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "stereo"
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)

        for frame in video_src.decode(video=0):
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        for frame in audio_src.decode(audio=0):
            for chunk in resampler.resample(frame):
                container.mux(audio.encode(chunk))
        for chunk in resampler.resample(None):
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))
