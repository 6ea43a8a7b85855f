"""A real flow module on disk that tests write, edit and re-import (fixture ``flow_module``)."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
import types
import uuid
from pathlib import Path


class FlowModule:
    """``source`` as module ``toyflow_<hex>`` in ``folder``; its stages log to ``STAGE_LOG``."""

    def __init__(self, folder: Path, source: str) -> None:
        self.name = f"toyflow_{uuid.uuid4().hex[:8]}"
        self.folder = folder
        self.path = folder / f"{self.name}.py"
        self.log = folder / "stages.log"
        os.environ["STAGE_LOG"] = str(self.log)
        self.write(source)

    def write(self, source: str) -> None:
        self.path.write_text(textwrap.dedent(source))
        sys.modules.pop(self.name, None)
        importlib.invalidate_caches()

    def ref(self, func: str = "toy") -> str:
        if str(self.folder) not in sys.path:
            sys.path.insert(0, str(self.folder))
        importlib.import_module(self.name)
        return f"{self.name}:{func}"

    def module(self) -> types.ModuleType:
        """The module, imported (its folder put on ``sys.path``)."""
        return importlib.import_module(self.ref().partition(":")[0])

    def executed(self) -> list[str]:
        """Stage bodies executed since the last call (and reset the log)."""
        if not self.log.exists():
            return []
        lines = self.log.read_text().split()
        self.log.unlink()
        return lines

    def forget(self) -> None:
        """Out of ``sys.modules``, its folder off ``sys.path``."""
        sys.modules.pop(self.name, None)
        if str(self.folder) in sys.path:
            sys.path.remove(str(self.folder))
