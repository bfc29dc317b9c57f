"""Edits tests make to copies of exported model folders."""

from __future__ import annotations

import json
from pathlib import Path


def unfingerprint(folder: Path) -> None:
    """Drop every graph's fingerprint from the folder's manifest, as in a folder exported before fingerprints."""
    path = Path(folder) / "manifest.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    for entry in (*manifest["graphs"], *manifest.get("engine_graphs", [])):
        entry.pop("fingerprint", None)
    path.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
