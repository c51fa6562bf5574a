"""``python -m dddframe.testing.contract pkg.module:Class ...``: the scenario table, in markdown.

Each argument names a :class:`~dddframe.testing.contract.ContractSuite` subclass (one column per
transport); the table lists every scenario with ``pass`` or the known failure's reason.
"""

from __future__ import annotations

import importlib
import sys

from dddframe.testing.contract.catalog import ContractSuite, markdown_table


def load(spec: str) -> type[ContractSuite]:
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise SystemExit(f"{spec!r}: name a class as 'package.module:ClassName'")
    cls = getattr(importlib.import_module(module), attr, None)
    if not (isinstance(cls, type) and issubclass(cls, ContractSuite)):
        raise SystemExit(f"{spec!r} is not a dddframe.testing.contract.ContractSuite subclass")
    return cls


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    sys.stdout.write(markdown_table([load(a) for a in argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
