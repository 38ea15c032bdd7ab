import pytest

from launcher.procfile import ProcessSpec, ProcfileError, parse_procfile


def test_parse_procfile_reads_entries_in_order() -> None:
    text = "# comment\n\nweb: python app.py\nworker: celery -A tasks worker  \n"
    assert parse_procfile(text) == [
        ProcessSpec("web", "python app.py"),
        ProcessSpec("worker", "celery -A tasks worker"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("web python app.py\n", "Procfile:1: expected 'name: command'"),
        ("web:\n", "Procfile:1: expected 'name: command'"),
        ("a: x\n\na: y\n", "Procfile:3: process name 'a' is used twice"),
        ("bad name: x\n", "Procfile:1: expected 'name: command'"),
    ],
)
def test_parse_procfile_rejects_malformed_line(text: str, message: str) -> None:
    with pytest.raises(ProcfileError, match=message):
        parse_procfile(text)
