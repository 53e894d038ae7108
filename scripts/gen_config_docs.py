"""Write docs/configuration.md from the settings classes (``make docs``; a test checks it is fresh)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVICES = [
    ("Shared (every service)", "services.common.settings", "SharedSettings", "every w2a service and job"),
    ("Policy server", "services.policy.settings", "PolicySettings", "w2a serve policy"),
    ("Skill planner", "services.planner.settings", "PlannerSettings", "w2a serve planner"),
    ("Stage 2 trainer", "services.trainer.settings", "TrainerSettings", "w2a train-residual"),
    ("World-model backend", "services.world_model.settings", "WorldModelSettings",
     "the Triton world-model backend, when config.pbtxt leaves a parameter empty"),
]


def _default(field) -> str:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        return "(computed)"
    value = field.default
    if value is PydanticUndefined:
        return "(required)"
    if hasattr(value, "get_secret_value"):
        return '""' if not value.get_secret_value() else "(secret)"
    if isinstance(value, Path):
        return f"`{value}`"
    return f"`{value!r}`" if value not in (None, "") else ("unset" if value is None else '`""`')


def _type(field) -> str:
    from typing import Literal, get_args, get_origin

    if get_origin(field.annotation) is Literal:
        return " or ".join(f"`{a}`" for a in get_args(field.annotation))
    text = getattr(field.annotation, "__name__", None) or str(field.annotation)
    text = text.replace("typing.", "").replace("pathlib.", "").replace("pydantic.types.", "")
    return text.replace(" | ", " or ").replace("NoneType", "None")


def _comments(module) -> dict[str, str]:
    """Trailing ``# comments`` on the field lines of the settings source."""
    import inspect

    notes = {}
    for line in inspect.getsource(module).splitlines():
        stripped = line.strip()
        if ":" in stripped and "#" in stripped and not stripped.startswith("#"):
            name = stripped.split(":", 1)[0].strip()
            if name.isidentifier():
                notes[name] = stripped.split("#", 1)[1].strip()
    return notes


def render() -> str:
    import importlib

    out = ["# Configuration reference", "",
           "Generated from the settings classes by `scripts/gen_config_docs.py` (`make docs`);",
           "do not edit by hand. Every setting is an environment variable; lists are JSON",
           "(e.g. `'[\"a\",\"b\"]'`). Command-line options, where a command has them, override these.", ""]
    for title, module_name, cls_name, command in SERVICES:
        module = importlib.import_module(module_name)
        cls = getattr(module, cls_name)
        prefix = cls.model_config.get("env_prefix", "")
        notes = _comments(module)
        out += [f"## {title} (`{command}`, prefix `{prefix}`)", "",
                "| variable | type | default | notes |", "| --- | --- | --- | --- |"]
        for name, field in cls.model_fields.items():
            note = notes.get(name, "").replace("|", "\\|")
            out.append(f"| `{prefix}{name.upper()}` | {_type(field)} | {_default(field)} | {note} |")
        out.append("")
        if cls_name == "PolicySettings":
            out += _base_backends(prefix)
    return "\n".join(out)


def _base_backends(prefix: str) -> list[str]:
    """The policy server's base: one table per backend, its fields nested under ``BASE__``."""
    from services.policy.base_settings import BACKENDS

    out = [f"### Base backends (`{prefix}BASE__<FIELD>`, or all at once as JSON in `{prefix}BASE`)", "",
           "Chosen by `BACKEND`; each backend has its own fields and defaults "
           "(`services/policy/base_settings.py`).", ""]
    for backend in BACKENDS:
        kind = backend.model_fields["backend"].annotation.__args__[0]
        notes = {}
        for klass in reversed(backend.__mro__[:-1]):  # a backend's own comments over its parents'
            if klass.__module__ == backend.__module__:
                notes.update(_comments(klass))
        out += [f"#### `{kind}`: {(backend.__doc__ or '').strip().splitlines()[0]}", "",
                "| variable | type | default | notes |", "| --- | --- | --- | --- |"]
        for name, field in backend.model_fields.items():
            if name == "backend":
                continue
            note = notes.get(name, "").replace("|", "\\|")
            out.append(f"| `{prefix}BASE__{name.upper()}` | {_type(field)} | {_default(field)} | {note} |")
        out.append("")
    return out


if __name__ == "__main__":
    target = ROOT / "docs" / "configuration.md"
    target.parent.mkdir(exist_ok=True)
    target.write_text(render())
    print(f"wrote {target}")
