"""The model families ltx2 serves, each described once (`base.Family`): LTX-2 19B, LTX-2.3, LTX-2.5.

`by_name` finds a family from what the loader detected in the files (never from a file name);
`preset` finds the family whose tiny preset `--model` names.
"""

from __future__ import annotations

from . import ltx2, ltx23
from .base import DEV_DEFAULTS, DISTILLED_DEFAULTS, Family, ModelDefaults, OfficialFiles, TinyPreset

FAMILIES: dict[str, Family] = {f.name: f for f in (ltx2.FAMILY, ltx23.FAMILY)}
DEFAULT = ltx2.FAMILY.name
PRESETS: dict[str, Family] = {f.tiny.name: f for f in FAMILIES.values()}

__all__ = ["DEFAULT", "DEV_DEFAULTS", "DISTILLED_DEFAULTS", "FAMILIES", "PRESETS", "Family", "ModelDefaults",
           "OfficialFiles", "TinyPreset", "by_name", "preset"]


def by_name(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


def preset(name: str) -> Family | None:
    """The family of tiny preset `name` ("tiny", "tiny-2.3"), or None when `name` is no preset."""
    return PRESETS.get(name)
