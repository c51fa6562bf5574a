"""Commands: pydantic models that ask the application to do one thing."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from dddframe.errors import CommandValidationError

__all__ = ["Command"]


class Command(BaseModel):
    """Base class of commands. Fields are validated when the command is built.

    >>> class Rename(Command):
    ...     name: str
    >>> Rename.parse({"name": 3})
    Traceback (most recent call last):
    ...
    dddframe.errors.CommandValidationError: Rename is invalid: name: Input should be ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def parse(cls, data: Any) -> Self:
        """Validate a dict (or JSON text) into this command, raising CommandValidationError."""
        try:
            if isinstance(data, str | bytes):
                return cls.model_validate_json(data)
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise CommandValidationError(
                f"{cls.__name__} is invalid: {problems}. Fix these fields and run it again."
            ) from exc
