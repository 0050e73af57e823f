"""The gate's service-level objectives: the TOML file, and the verdict on a measured run.

Each check is named by its key in the file (``max_error_rate``, ``p95_ms.http``, ...), so a
failing name in the gate's output points straight at the line that set its limit.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

KINDS = ("http", "stream", "ws", "mqtt")
Kind = Literal["http", "stream", "ws", "mqtt"]
DEFAULT_FILE = Path(__file__).with_name("slo.toml")


class SloError(ValueError):
    """The SLO file cannot be used (missing, not TOML, unknown key, bad value)."""


class Slo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_error_rate: float | None = Field(None, ge=0, le=1)
    max_ttft_p95_ms: float | None = Field(None, gt=0)
    min_tokens_per_s: float | None = Field(None, ge=0)
    p95_ms: dict[Kind, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)


def load(path: Path) -> Slo:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SloError(f"cannot read SLO file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SloError(f"SLO file {path} is not valid TOML: {exc}") from None
    try:
        return Slo.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise SloError(f"SLO file {path}: {problems} (keys: max_error_rate, max_ttft_p95_ms, "
                       f"min_tokens_per_s, [p95_ms] {', '.join(KINDS)})") from None


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc if part != "[key]") or "file"


@dataclass(frozen=True)
class Measured:
    """What the verdict needs from a run; None where nothing was measured."""

    p95_ms: dict[str, float | None]     # per request type in the mix
    error_rate: float | None            # None: no request at all
    ttft_p95_ms: float | None
    tokens_per_s: float | None          # median per-stream decode speed


@dataclass(frozen=True)
class Check:
    slo: str
    measured: float | None
    limit: float
    bound: Literal["max", "min"]
    unit: str

    @property
    def passed(self) -> bool:
        if self.measured is None:
            return False
        return self.measured <= self.limit if self.bound == "max" else self.measured >= self.limit

    def to_json(self) -> dict[str, object]:
        return {"slo": self.slo, "measured": self.measured, "limit": self.limit,
                "bound": self.bound, "unit": self.unit, "passed": self.passed}


def judge(slo: Slo, measured: Measured, kinds: list[str]) -> list[Check]:
    """One check per objective that applies to the run (types in its mix). An objective with
    nothing measured fails: a gate that saw no streams cannot vouch for their speed."""
    checks: list[Check] = []
    if slo.max_error_rate is not None:
        checks.append(Check("max_error_rate", measured.error_rate, slo.max_error_rate,
                            "max", "ratio"))
    for kind in KINDS:
        if kind in kinds and kind in slo.p95_ms:
            checks.append(Check(f"p95_ms.{kind}", measured.p95_ms.get(kind), slo.p95_ms[kind],
                                "max", "ms"))
    if "stream" in kinds:
        if slo.max_ttft_p95_ms is not None:
            checks.append(Check("max_ttft_p95_ms", measured.ttft_p95_ms, slo.max_ttft_p95_ms,
                                "max", "ms"))
        if slo.min_tokens_per_s is not None:
            checks.append(Check("min_tokens_per_s", measured.tokens_per_s,
                                slo.min_tokens_per_s, "min", "tokens/s"))
    return checks
