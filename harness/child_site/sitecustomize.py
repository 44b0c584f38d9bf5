"""Loaded by every Python process a spec starts (the harness puts this folder first on
PYTHONPATH): at exit it records the versions of torch and transformers the process
actually imported, so results.json says what ran rather than what was pinned.

It imports nothing heavy itself, writes only when TRAINSPEC_VERSIONS_FILE is set and torch
or transformers was imported, and then runs whatever sitecustomize it shadows.
"""

import atexit
import importlib.machinery
import importlib.util
import json
import os
import platform
import sys


def _imported_versions() -> dict:
    torch = sys.modules.get("torch")
    transformers = sys.modules.get("transformers")
    version = getattr(torch, "version", None)
    return {
        "python": platform.python_version(),
        "torch": str(torch.__version__) if torch is not None and hasattr(torch, "__version__") else None,
        "transformers": getattr(transformers, "__version__", None),
        "cuda": getattr(version, "cuda", None),
    }


def _record() -> None:
    path = os.environ.get("TRAINSPEC_VERSIONS_FILE")
    if not path or ("torch" not in sys.modules and "transformers" not in sys.modules):
        return
    # Every rank of a torchrun writes the same facts; replacing the file keeps it whole.
    # Ranks on other nodes share the folder but not the pid space, hence the host name.
    temporary = f"{path}.{platform.node()}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w") as stream:
            json.dump(_imported_versions(), stream)
        os.replace(temporary, path)
    except OSError:
        pass


def _run_shadowed_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


atexit.register(_record)
_run_shadowed_sitecustomize()
