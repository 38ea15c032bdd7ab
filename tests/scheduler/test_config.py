from pathlib import Path

import pytest

from envconfig import ConfigError
from scheduler.config import load_settings


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"SCHEDULER_VIDEO_RATE_LIMIT": "lots"}, "SCHEDULER_VIDEO_RATE_LIMIT='lots'"),
        ({"SCHEDULER_POST_RATE_LIMIT": "ten/minute"}, "SCHEDULER_POST_RATE_LIMIT='ten/minute'"),
        ({"SCHEDULER_PORT": "http"}, "SCHEDULER_PORT='http'"),
        ({"VIDEO_SOFT_TIME_LIMIT": "9999"}, "VIDEO_SOFT_TIME_LIMIT=9999 must be below"),
    ],
)
def test_invalid_setting_rejected(tmp_path: Path, environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({"SCHEDULER_STATE_DIR": str(tmp_path), **environ})


def test_rate_limit_policies_read(tmp_path: Path) -> None:
    settings = load_settings(
        {"SCHEDULER_STATE_DIR": str(tmp_path), "SCHEDULER_VIDEO_RATE_LIMIT": "2/minute, burst 3"}
    )
    assert settings.video_rate_limit == "2/minute, burst 3"
