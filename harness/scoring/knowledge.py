"""Knowledge files (`tasks/knowledge/*.txt`): one `class: visual attributes` line per class, the PA_P block of
VRFT-Aug prompts. The task renders the block into its prompt; the recitation reward compares the model's
`<think>` text with the same block, so both build it here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import medharness.tasks as _tasks_package
from medharness.core.errors import ConfigError

KNOWLEDGE_DIR = Path(_tasks_package.__file__).resolve().parent / "knowledge"


def read_knowledge(path: Path) -> dict[str, str]:
    """`class: attributes` lines (blank lines and `#` comments skipped) -> {class: attributes}."""
    if not path.is_file():
        raise ConfigError(f"knowledge file {path} does not exist")
    out: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, colon, attributes = line.partition(":")
        if not colon or not name.strip() or not attributes.strip():
            raise ConfigError(f"{path}:{number}: expected 'class: visual attributes'")
        out[name.strip()] = attributes.strip()
    return out


def knowledge_block(path: Path, classes: Sequence[str]) -> str:
    """The PA_P block: every class with its attributes, in the given (the task's) class order."""
    knowledge = read_knowledge(path)
    missing = [c for c in classes if c not in knowledge]
    if missing:
        raise ConfigError(f"{path}: no attributes for class(es) {missing}")
    return "\n".join(f"{c}: {knowledge[c]}" for c in classes)


def knowledge_file(ref: str | Path) -> Path:
    """A knowledge file named absolutely, or relative to the shipped `tasks/knowledge/` folder
    (`medmnist_blood.txt` or `knowledge/medmnist_blood.txt`)."""
    path = Path(ref)
    if path.is_absolute():
        return path
    return KNOWLEDGE_DIR / (path.relative_to("knowledge") if path.parts[:1] == ("knowledge",) else path)
