"""What a restore shows while it runs: each target's phase and counters, and the job's.

A target laid out anew is written piece by piece (one per partition); it is still one disk to
whoever watches, so its pieces are shown merged.
"""

from __future__ import annotations

from dataclasses import dataclass

from rescue.units import human_size

# the phase a merged target shows: the first of these that any of its pieces is in
_PHASES = ("failed", "mismatch", "incomplete", "interrupted", "writing", "verifying",
           "fixing-table", "waiting", "done")


@dataclass(frozen=True)
class TargetProgress:
    """One target at one moment; phase: waiting, writing, verifying, fixing-table, done,
    mismatch, failed, incomplete, interrupted."""

    target: str
    phase: str
    size: int  # bytes restored onto this target
    written: int  # bytes durable on the target (earlier runs included)
    verified: int
    current_rate: float
    average_rate: float
    eta: float | None
    mismatches: tuple[tuple[int, int], ...] = ()
    error: str | None = None
    map_path: str = ""
    # after a resize: files listed and compared, files and bytes hashed on both sides
    compared: tuple[int, int, int] | None = None

    def files_line(self) -> str | None:
        """What the file comparison after a resize found alike, or None without one."""
        if self.compared is None:
            return None
        listed, hashed, size = self.compared
        return (f"files after resize: {listed} as in the image, {hashed} "
                f"({human_size(size)}) with the same SHA-256")

    def as_dict(self) -> dict[str, object]:
        return {"target": self.target, "phase": self.phase, "size": self.size,
                "written": self.written, "verified": self.verified,
                "current_rate": round(self.current_rate),
                "average_rate": round(self.average_rate),
                "eta": None if self.eta is None else round(self.eta, 1),
                "mismatches": [list(m) for m in self.mismatches], "error": self.error,
                "mapfile": self.map_path,
                "files_compared": None if self.compared is None else dict(
                    zip(("listed", "hashed", "bytes"), self.compared, strict=True))}


@dataclass(frozen=True)
class RestoreProgress:
    image: str
    phase: str  # checking, shrinking, restoring, verifying, finished
    elapsed: float
    paused: bool
    targets: tuple[TargetProgress, ...]

    def as_dict(self) -> dict[str, object]:
        return {"image": self.image, "phase": self.phase, "elapsed": round(self.elapsed, 3),
                "paused": self.paused, "targets": [t.as_dict() for t in self.targets]}


def merged(pieces: list[TargetProgress]) -> TargetProgress:
    """The pieces of one target as the one target they are."""
    if len(pieces) == 1:
        return pieces[0]
    phase = min((p.phase for p in pieces),
                key=lambda phase: _PHASES.index(phase) if phase in _PHASES else 0)
    etas = [p.eta for p in pieces if p.eta is not None]
    return TargetProgress(
        pieces[0].target, phase, sum(p.size for p in pieces), sum(p.written for p in pieces),
        sum(p.verified for p in pieces), sum(p.current_rate for p in pieces),
        sum(p.average_rate for p in pieces), sum(etas) if etas else None,
        tuple(m for p in pieces for m in p.mismatches),
        next((p.error for p in pieces if p.error), None), pieces[0].map_path,
        next((p.compared for p in pieces if p.compared), None))
