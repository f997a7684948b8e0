"""A small on-disk cache for the trained models of chapters 8 and 9.

Pre-training and the reward model take seconds that a learner should pay once:
after a kernel restart (Binder culls an idle session after 10 minutes) they load
from ``<notebook folder>/.ppo_cache``. Each entry is keyed by a hash of *every*
setting that made it (and the cache format), and the settings are stored beside
the weights and compared on load, so a change of settings never reuses a stale
model. Writes are atomic (a temporary file, then a rename); a file that does not
load is ignored and rebuilt, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

FORMAT = 1
ENV = "PPO_COURSE_CACHE"


def cache_dir() -> Path:
    """``$PPO_COURSE_CACHE`` if set, else ``.ppo_cache`` in the current folder (a notebook's folder)."""
    return Path(os.path.expanduser(os.environ.get(ENV) or ".ppo_cache")).resolve()


def key_of(kind: str, settings: dict) -> str:
    blob = json.dumps({"kind": kind, "format": FORMAT, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def weights_digest(model: torch.nn.Module) -> str:
    """A short hash of every parameter and buffer of ``model`` (names, shapes, values)."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def path_of(kind: str, settings: dict) -> Path:
    return cache_dir() / f"{kind}-{key_of(kind, settings)}.pt"


def load(kind: str, settings: dict) -> dict | None:
    """The stored payload for exactly these settings, or None."""
    path = path_of(kind, settings)
    if not path.exists():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # truncated or foreign file: rebuild, never trust
        return None
    stored = payload.get("settings") if isinstance(payload, dict) else None
    if stored != json.loads(json.dumps(settings, sort_keys=True, default=str)):
        return None
    return payload


def save(kind: str, settings: dict, payload: dict[str, Any]) -> Path | None:
    """Store ``payload`` (tensors, numbers, lists, strings) atomically; never fails the caller."""
    path = path_of(kind, settings)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = dict(payload, settings=json.loads(json.dumps(settings, sort_keys=True, default=str)))
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
        return path
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)  # no half-written file left behind
        warnings.warn(f"could not cache the {kind} model in {path.parent} ({exc}); it is returned all the same, "
                      f"and the next run trains it again", RuntimeWarning, stacklevel=3)
        return None
