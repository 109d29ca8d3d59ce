"""``python -m cnnlab``: the same as the ``cnnlab`` command.

The package's entry point, not library code: it runs the command line's own ``__main__`` by name
(``runpy``), so no module of the library imports ``cnnlab.cli`` (tests/test_architecture.py).
"""

import runpy

runpy.run_module("cnnlab.cli", run_name="__main__", alter_sys=True)
