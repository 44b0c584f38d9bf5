"""Loaded by every Python process a spec starts (the harness puts this folder first on
PYTHONPATH, and children inherit it, so torchrun's ranks load it too). At exit it records:

- the versions of torch and transformers the process actually imported, so results.json
  says what ran rather than what was pinned (when TRAINSPEC_VERSIONS_FILE is set);
- which files inside the repository (TRAINSPEC_REPO) the process used: the modules it
  imported and the files it opened for reading, one JSON file per process in
  TRAINSPEC_TRACE_DIR, which the harness merges into the spec's dependencies.

Standard library only, nothing of the harness: it runs inside the code under test. An open
costs one string check in memory; the only write is at exit. Then it runs whatever
sitecustomize it shadows.
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


class _Trace:
    """Repository files this process used; paths outside the repository (and its venvs) are never kept."""

    def __init__(self, repo: str, folder: str):
        self.folder = folder
        self.roots = tuple({os.path.join(repo, ""), os.path.join(os.path.realpath(repo), "")})
        # A venv inside the repository (.nox/, .venv/) holds the libraries, not the project.
        self.outside = tuple(
            {os.path.join(os.path.realpath(p), "") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)}
        )
        self.opened: set[str] = set()

    def audit(self, event: str, args: tuple) -> None:
        if event != "open":
            return
        path, mode = args[0], args[1]
        if isinstance(path, int) or (mode is not None and any(c in mode for c in "wax")):
            return
        # os.open gives no mode: its flags say whether it only reads.
        if mode is None and args[2] & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            return
        try:
            path = os.fsdecode(path)
            if not os.path.isabs(path):
                path = os.path.join(os.getcwd(), path)
        except (TypeError, ValueError, OSError):
            return
        if path.startswith(self.roots):
            self.opened.add(path)

    def files(self) -> list[str]:
        """Repository-relative paths of the modules imported and the files read that still exist."""
        candidates = set(self.opened)
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if isinstance(path, str) and path.startswith(self.roots):
                candidates.add(path)
        real_root = os.path.join(os.path.realpath(self.roots[0]), "")
        kept = set()
        for path in candidates:
            real = os.path.realpath(path)
            if not real.startswith(real_root) or real.startswith(self.outside) or not os.path.isfile(real):
                continue
            relative = os.path.relpath(real, real_root).replace(os.sep, "/")
            # Bytecode stands for its source, which the module's __file__ already names.
            if "__pycache__/" in relative or relative.startswith(".git/"):
                continue
            kept.add(relative)
        return sorted(kept)

    def write(self) -> None:
        name = f"trace-{platform.node()}-{os.getpid()}.json"
        temporary = os.path.join(self.folder, f".{name}.tmp")
        try:
            os.makedirs(self.folder, exist_ok=True)
            with open(temporary, "w") as stream:
                json.dump({"pid": os.getpid(), "argv": sys.argv[:8], "files": self.files()}, stream)
            os.replace(temporary, os.path.join(self.folder, name))
        except OSError:
            pass


def _start_trace() -> None:
    repo, folder = os.environ.get("TRAINSPEC_REPO"), os.environ.get("TRAINSPEC_TRACE_DIR")
    if not repo or not folder:
        return
    trace = _Trace(repo, folder)
    sys.addaudithook(trace.audit)
    atexit.register(trace.write)


def _run_shadowed_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    rest = [entry for entry in sys.path if os.path.abspath(entry or os.curdir) != here]
    spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
    if spec is not None and spec.loader is not None:
        spec.loader.exec_module(importlib.util.module_from_spec(spec))


atexit.register(_record)
_start_trace()
_run_shadowed_sitecustomize()
