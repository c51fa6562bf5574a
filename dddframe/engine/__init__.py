"""The command engine: units of work, repositories, locks and concurrency retries."""

from dddframe.engine.command import Command
from dddframe.engine.engine import ConflictRetry, Engine
from dddframe.engine.locks import AsyncioLocker, Locker, PostgresAdvisoryLocker
from dddframe.engine.repository import Repository
from dddframe.engine.unit_of_work import UnitOfWork

__all__ = [
    "AsyncioLocker",
    "Command",
    "ConflictRetry",
    "Engine",
    "Locker",
    "PostgresAdvisoryLocker",
    "Repository",
    "UnitOfWork",
]
