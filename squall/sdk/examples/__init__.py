"""The examples shipped with Squall, one file per feature, loaded with ``[core] load_examples``.

They ship inside the package (so an installed Squall has them) but are user files, not
modules of it: the processor and the workers load them by path from :data:`EXAMPLES_FOLDER`,
like the files of the user's folder, and a path under it travels as ``EXAMPLES/...`` in a
task-run command. mypy leaves them out; ruff and the layout test check them as user code.

This file must not contain the three letters the safe-mode heuristic of the file listing
looks for (in any case), or it would be listed and imported as one of the examples.
"""

from __future__ import annotations

from pathlib import Path

#: the folder of the shipped examples (``include_examples``, ``[core] load_examples``)
EXAMPLES_FOLDER = Path(__file__).resolve().parent
