"""OpenVINO and NNCF imported without their usage telemetry, unless the user opted in to it.

`import openvino` sends a Google Analytics event ("general_import") and writes a client id and counters under
~/intel; `nncf.quantize` sends more. Both come from the `openvino_telemetry` package, which consents by itself when
no consent file exists, and send from a forked child of this (multi-threaded) process. An on-prem encoder, CLI,
server or export must not call home by default, as for onnxruntime (runtime/__init__.py). Both libraries fall back
to a stub when `openvino_telemetry` cannot be imported, so it is hidden while they are first imported: nothing else
changes, and a later `import openvino_telemetry` of the user works. Whoever opted in with OpenVINO's own
`opt_in_out --opt_in` (consent file "1") keeps it.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from collections.abc import Iterator
from types import ModuleType

TELEMETRY_MODULE = "openvino_telemetry"
_FIRST_IMPORT = threading.RLock()


def import_without_telemetry(name: str) -> ModuleType:
    """`importlib.import_module(name)` (openvino, nncf) with OpenVINO's usage telemetry left out, unless the user
    opted in; raises ImportError as the import would."""
    with _FIRST_IMPORT:  # one thread hides and restores sys.modules' entries at a time
        if name in sys.modules or opted_in():
            return importlib.import_module(name)
        with _hidden(TELEMETRY_MODULE):
            return importlib.import_module(name)


def opted_in() -> bool:
    """Whether the user gave OpenVINO's telemetry explicit consent (its consent file holds "1")."""
    try:
        from openvino_telemetry.utils.opt_in_checker import ConsentCheckResult, OptInChecker

        return OptInChecker().check(enable_opt_in_dialog=False) == ConsentCheckResult.ACCEPTED
    except Exception:  # absent, or another layout: no explicit consent can be read
        return False


@contextlib.contextmanager
def _hidden(module: str) -> Iterator[None]:
    """`import module` (and its submodules) raises ImportError within the block (a None entry in sys.modules)."""
    saved = {key: mod for key, mod in sys.modules.items() if key == module or key.startswith(module + ".")}
    for key in saved:
        del sys.modules[key]
    sys.modules[module] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if sys.modules.get(module, "") is None:
            del sys.modules[module]
        sys.modules.update(saved)
