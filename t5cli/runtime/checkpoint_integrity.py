"""Checksums of checkpoint files: ``checkpoint_<N>/t5cli_checksums.json``.

Written once orbax has committed a step (every file of ``checkpoint_<N>/`` with its size
and CRC-32), and verified before a checkpoint's item (``params/``, ``opt_state/``) is
read: a missing, truncated or changed file is named in one line. Checkpoints written
before this file existed load as before. ``T5CLI_VERIFY_CHECKPOINTS=0`` skips the check.

CRC-32 (zlib) detects any flipped bit or burst of up to 32 bits and runs at several GB/s;
it guards against damage, not against tampering.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Dict, Optional, Tuple

MANIFEST = "t5cli_checksums.json"
_CHUNK = 1 << 22


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def _files(step_dir: Path):
    for root, dirs, files in os.walk(step_dir):
        dirs.sort()
        for name in sorted(files):
            path = Path(root) / name
            rel = path.relative_to(step_dir).as_posix()
            if rel != MANIFEST:
                yield rel, path


def write_manifest(step_dir) -> Path:
    """Record size and CRC-32 of every file of ``step_dir`` (atomically); returns its path."""
    step_dir = Path(step_dir)
    files = {rel: [path.stat().st_size, f"{_crc32(path):08x}"] for rel, path in _files(step_dir)}
    out = step_dir / MANIFEST
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps({"version": 1, "algorithm": "crc32", "files": files}, indent=0))
    os.replace(tmp, out)
    return out


def verification_enabled() -> bool:
    return os.environ.get("T5CLI_VERIFY_CHECKPOINTS", "1").strip().lower() not in ("0", "false", "no", "off")


def _read_manifest(step_dir: Path) -> Optional[Dict[str, Tuple[int, str]]]:
    path = step_dir / MANIFEST
    try:
        data = json.loads(path.read_text())
        return {k: (int(v[0]), str(v[1])) for k, v in data["files"].items()}
    except FileNotFoundError:
        return None
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return {MANIFEST: (-1, "unreadable")}


def find_damage(item_dir) -> Optional[str]:
    """None when the files of ``item_dir`` (``checkpoint_<N>/<item>``) match the checksums
    recorded for its checkpoint (or none were recorded, or checking is off); else what is
    wrong, e.g. ``file params/d/1a2b changed since it was saved (checksum mismatch)``."""
    if not verification_enabled():
        return None
    item_dir = Path(str(item_dir))
    step_dir = item_dir.parent
    recorded = _read_manifest(step_dir)
    if recorded is None:
        return None
    if MANIFEST in recorded:
        return f"its checksum file {MANIFEST} is unreadable"
    prefix = item_dir.name + "/"
    for rel, (size, crc) in sorted(recorded.items()):
        if not rel.startswith(prefix):
            continue
        path = step_dir / rel
        if not path.is_file():
            return f"file {rel} is missing"
        if path.stat().st_size != size:
            return f"file {rel} has {path.stat().st_size} bytes, not the {size} it was saved with"
        if f"{_crc32(path):08x}" != crc:
            return f"file {rel} changed since it was saved (checksum mismatch)"
    return None


__all__ = ["MANIFEST", "write_manifest", "find_damage", "verification_enabled"]
