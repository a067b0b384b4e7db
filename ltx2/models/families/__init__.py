"""The model families ltx2 serves, each described once (`base.Family`): LTX-2 19B, LTX-2.3, LTX-2.5.

`by_name` finds a family from what the loader detected in the files (never from a file name);
`preset` finds the family whose tiny preset `--model` names.
"""

from __future__ import annotations

from . import ltx2, ltx23, ltx25
from .base import DEV_DEFAULTS, DISTILLED_DEFAULTS, Family, ModelDefaults, OfficialFiles, TinyPreset

FAMILIES: dict[str, Family] = {f.name: f for f in (ltx2.FAMILY, ltx23.FAMILY, ltx25.FAMILY)}
DEFAULT = ltx2.FAMILY.name
PRESETS: dict[str, Family] = {f.tiny.name: f for f in FAMILIES.values()}

__all__ = ["DEFAULT", "DEV_DEFAULTS", "DISTILLED_DEFAULTS", "FAMILIES", "PRESETS", "Family", "ModelDefaults",
           "OfficialFiles", "TinyPreset", "by_name", "lora_families", "lora_family_problem", "preset"]


def by_name(name: str) -> Family:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


def lora_families(keys) -> tuple[Family, ...]:
    """The families whose transformer has every family-particular layer the LoRA `keys` adapt."""
    markers = set().union(*(f.lora_markers for f in FAMILIES.values()))
    found = {m for m in markers if any(m in key for key in keys)}
    return tuple(f for f in FAMILIES.values() if found <= f.lora_markers)


def lora_family_problem(keys, loaded: Family) -> str | None:
    """Why a LoRA with these keys is for another family than `loaded`, in words; None when it may fit."""
    fits = lora_families(keys)
    if loaded in fits:
        return None
    markers = set().union(*(f.lora_markers for f in FAMILIES.values()))
    found = sorted(m for m in markers if any(m in key for key in keys))
    made_for = " or ".join(f.title for f in fits) or "no single model family"
    return (f"is a LoRA for {made_for} (it adapts {', '.join(found)}, which {loaded.title} does not have); the "
            f"loaded model is {loaded.title}")


def preset(name: str) -> Family | None:
    """The family of tiny preset `name` ("tiny", "tiny-2.3"), or None when `name` is no preset."""
    return PRESETS.get(name)
