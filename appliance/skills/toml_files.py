"""The one way the skills read an admin's or author's TOML into a typed model: a mistake
comes back as one sentence naming the file and each field, as the given exception."""

from __future__ import annotations

import tomllib
from typing import TypeVar

from pydantic import BaseModel, ValidationError

Model = TypeVar("Model", bound=BaseModel)


def parse_toml(model: type[Model], text: str, where: str, error: type[Exception]) -> Model:
    try:
        return model.model_validate(tomllib.loads(text))
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{where}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}"
                             for e in exc.errors())
        raise error(f"{where}: {problems}") from None
