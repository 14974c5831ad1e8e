"""`rescue verify`: whether an image is intact by every check it carries, decided once for
every presenter (the CLI prints it as text or JSON)."""

from __future__ import annotations

from dataclasses import dataclass

from rescue.errors import ExitCode
from rescue.formats.image import open_reader
from rescue.formats.integrity import Verdict, verify_image


@dataclass(frozen=True)
class Verification:
    """The verdict on one image, and what it means for the user and the exit code."""

    image: str
    verdict: Verdict

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.verdict.intact else ExitCode.UNREADABLE

    def lines(self) -> list[str]:
        """The damage, one line each; or one line saying what an intact image was checked for."""
        verdict = self.verdict
        if not verdict.intact:
            return verdict.lines()
        said = f"intact ({verdict.summary()})" if verdict.proven else verdict.summary()
        return [f"{self.image}: {said}"]

    def as_dict(self) -> dict[str, object]:
        verdict = self.verdict
        return {"image": self.image, "damaged": [list(r) for r in verdict.damaged],
                "problems": verdict.problems, "checked": verdict.checked,
                "fingerprint_ok": verdict.fingerprint_ok}


def verify(path: str, image_format: str | None = None) -> Verification:
    """Check everything the image carries, through the same gate restore uses."""
    reader = open_reader(path, image_format)
    try:
        return Verification(path, verify_image(path, reader))
    finally:
        reader.close()
