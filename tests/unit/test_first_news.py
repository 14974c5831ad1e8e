"""How the command line tells the chosen files' outcomes: each once, as text above the live
status block or as JSON objects before the progress object."""

from __future__ import annotations

import io
import json

from rescue.commands.image import FirstNews, status_line, status_lines
from rescue.commands.status import ProgressReporter
from rescue.engine.jobs import FirstProgress, Phase, Progress
from rescue.fs.chosen import ChosenFile, FileState
from rescue.rangemap import STATES

CH1 = ChosenFile("/thesis/ch1.tex", 9000, ((0, 1 << 20, 9000),), (), True)
CH2 = ChosenFile("/thesis/ch2.tex", 20000, ((0, 2 << 20, 12288), (12288, 5 << 20, 7712)),
                 (), True)
LOST = ChosenFile("/thesis/lost.tex", None, (), (), False)
SETTLED = (FileState(CH1, (), False), FileState(CH2, ((8192, 4096), (12288, 512)), False),
           FileState(LOST, (), False))


def progress(settled: int, stage: str = "files") -> Progress:
    first = FirstProgress(stage, 3, SETTLED[:settled], ("/thesis/old not found; x",))
    return Progress(size=1 << 30, phase=Phase.COPYING, pass_no=1, position=0,
                    totals=dict.fromkeys(STATES, 0), domain_size=1 << 30, current_rate=0.0,
                    average_rate=0.0, elapsed=1.0, since_last_good=0.0, read_errors=0,
                    eta=None, first=first)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def reporter(moments: list[Progress], stream: io.StringIO, json_lines: bool = False
             ) -> ProgressReporter[Progress]:
    return ProgressReporter(lambda: moments.pop(0), json_lines, status_lines, status_line,
                            stream=stream, news=FirstNews())


def test_each_file_is_told_once_above_the_live_lines() -> None:
    stream = Terminal()
    shown = reporter([progress(1), progress(1), progress(3, "done")], stream)
    for _ in range(3):
        shown.update()
    text = stream.getvalue()
    assert text.count("first: /thesis/ch1.tex complete\n") == 1
    assert text.count("first: /thesis/old not found; x\n") == 1
    assert "first: /thesis/ch2.tex 4608 bytes unreadable at 8192+4096, 12288+512\n" in text
    assert "first: /thesis/lost.tex unreadable: its own metadata lies in bad sectors\n" in text
    assert text.count("first files: 1 of 3 complete") == 3  # one status block each update
    # the news take the old block's place and the block is drawn whole below them: each
    # redraw goes up over the five status lines only, never over news
    assert text.count("\x1b[5F") == 2
    last = text[text.rindex("\x1b[5F"):]
    assert last.index("lost.tex") < last.index("first files:")


def test_json_tells_each_file_once_before_the_progress() -> None:
    stream = io.StringIO()
    shown = reporter([progress(1), progress(3, "done")], stream, json_lines=True)
    shown.update()
    shown.update()
    objects = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [o["type"] for o in objects] == ["first_note", "first", "progress", "first",
                                            "first", "progress"]
    assert objects[3] == {"type": "first", "path": "/thesis/ch2.tex", "size": 20000,
                          "complete": False, "metadata_readable": True, "mapped": True,
                          "bad": [[8192, 4096], [12288, 512]]}
    assert objects[-1]["first"] == {"stage": "done", "files": 3, "complete": 1, "damaged": 2,
                                    "pending": 0, "notes": ["/thesis/old not found; x"]}
