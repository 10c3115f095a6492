"""docs/operations.md lists every setting config/settings.py reads from the environment."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_environment_setting_is_documented():
    source = (ROOT / "config" / "settings.py").read_text()
    names = set(re.findall(r'env_(?:str|int|float|bool|list)\(\s*"([A-Z0-9_]+)"', source))
    assert len(names) > 40
    docs = (ROOT / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", docs))
    assert sorted(names - documented) == []
