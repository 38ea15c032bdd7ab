"""PyAV probing, sizing, transcoding, thumbnails and cooperative cancellation."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from scheduler import media


@pytest.mark.parametrize(
    ("width", "height", "target", "expected"),
    [
        (640, 360, 240, (426, 240)),
        (1920, 1080, 480, (854, 480)),
        (640, 360, 720, (640, 360)),
        (360, 640, 480, (270, 480)),
        (641, 361, 361, (640, 360)),
    ],
)
def test_target_size(width: int, height: int, target: int, expected: tuple[int, int]) -> None:
    assert media.target_size(width, height, target) == expected


def test_probe_clip(clip_path: Path) -> None:
    info = media.probe(clip_path)
    assert (info.width, info.height) == (640, 360)
    assert info.video_codec == "h264"
    assert info.audio_codec == "aac"
    assert info.frame_rate == 25.0
    assert info.frames == 75
    assert info.duration == pytest.approx(3.0, abs=0.1)


@pytest.mark.parametrize("content", [b"", b"plain text", b"\x1a\x45\xdf\xa3" + b"\x00" * 64])
def test_probe_not_video(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "file.mp4"
    path.write_bytes(content)
    with pytest.raises(media.NotAVideo):
        media.probe(path)


def test_transcode_outputs(clip_path: Path, tmp_path: Path) -> None:
    info = media.probe(clip_path)
    result = media.transcode(clip_path, tmp_path, height=240, thumbnails=5, info=info)
    assert result.frames == 75
    assert result.thumbnails == [f"thumb_0{i}.jpg" for i in range(1, 6)]
    with av.open(str(tmp_path / "video.mp4")) as container:
        frames = sum(1 for _ in container.decode(video=0))
        assert container.streams.video[0].codec_context.height == 240
    assert frames == 75
    for name in result.thumbnails:
        assert (tmp_path / name).read_bytes()[:2] == b"\xff\xd8"


def test_transcode_cancel(clip_path: Path, tmp_path: Path) -> None:
    info = media.probe(clip_path)
    calls = []

    def stop_at_ten(done: int, expected: int) -> bool:
        calls.append(done)
        return done < 10

    with pytest.raises(media.TranscodeCancelled):
        media.transcode(
            clip_path, tmp_path, height=240, thumbnails=0, info=info, on_progress=stop_at_ten
        )
    assert calls[-1] == 10
