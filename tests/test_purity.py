"""codec/ is a pure library: importing it pulls in no pipeline or service package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_codec_imports_no_pipeline_packages() -> None:
    probe = (
        "import sys, codec, codec.api, codec.legacy.learned, codec.fallback; "
        "bad = [m for m in ('prefect', 'globus_sdk', 'tensorstore', 'zarr') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


def test_only_entropy_module_imports_constriction() -> None:
    users = [str(p.relative_to(ROOT)) for p in (ROOT / "codec").rglob("*.py") if "import constriction" in p.read_text()]
    assert users == ["codec/legacy/entropy.py"]
