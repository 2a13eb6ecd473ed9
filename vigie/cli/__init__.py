"""The ``vigie`` command: the application floor, above ``edge``, ``hub`` and ``ota``.

One module per command group; ``main`` builds the parser and dispatches. Nothing below
this package (the core, ``ota``, ``edge``, ``hub``) may import it: import-linter checks
that in the test command (see ``[tool.importlinter]`` in ``pyproject.toml``).
"""

from vigie.cli.main import main

__all__ = ["main"]
