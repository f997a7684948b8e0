"""What every benchmark writes next to its figures: the command, the date, the machine."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def header(**machine_extra) -> dict:
    import torch

    return {"command": " ".join([Path(sys.executable).name] + sys.argv),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                        "python": platform.python_version(), "torch": torch.__version__, **machine_extra}}


def write(record: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")
    return path
