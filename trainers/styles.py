"""Prompting diversity (RARL): each training sample gets one of several prompt variants ("styles") of its
task, drawn with a seeded RNG and recorded per sample.

    prompt_styles: [explanation, short, open_ended]     # reasoning_vqa's three RARL styles

The draw is `random.Random(f"prompt-styles:{seed}")`, one `choice` per training sample in the order the
samples are selected, so the same seed and samples give the same assignment. Every style must read answers
the way the run's own prompt variant does (same parser chain), because the rewards parse every completion
with that variant's parser; otherwise the config is refused. `OUTPUT/prompt_styles.json` records the seed,
the styles, the per-sample assignment and the counts; each dataset row carries its `prompt_style`.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medharness.core.atomic import write_json_atomic
from medharness.core.errors import ConfigError
from medharness.core.records import Sample
from medharness.taskfiles.task import Task, load_task, recipe_for

STYLES_FILE = "prompt_styles.json"


def style_tasks(task: Task, styles: Sequence[str], prompt: str, data_dir: str | None) -> dict[str, Task]:
    """One task object per style (the same task file, another prompt variant), each checked against
    `prompt`."""
    if len(set(styles)) != len(styles):
        raise ConfigError(f"prompt_styles: a style is listed twice: {list(styles)}")
    parser = recipe_for(task, prompt=prompt).parser.name
    out = {}
    for style in styles:
        overrides: dict[str, Any] = {"prompt": style, **({"data_dir": data_dir} if data_dir else {})}
        try:
            styled = load_task(task.path, overrides)
            styled.prompt_name  # noqa: B018 - an unknown variant fails here
            chain = recipe_for(styled, prompt=style).parser.name
        except ConfigError as exc:
            raise ConfigError(f"prompt_styles: {exc}") from None
        if chain != parser:
            raise ConfigError(f"prompt_styles: style '{style}' parses answers with {chain}, but the rewards "
                              f"parse with prompt '{prompt}' ({parser}); choose styles that share the parser")
        out[style] = styled
    return out


def assign_styles(samples: Sequence[Sample], styles: Sequence[str], seed: int) -> dict[str, str]:
    """sample id -> style, drawn with a seeded RNG in sample order."""
    rng = random.Random(f"prompt-styles:{seed}")
    return {s.id: rng.choice(list(styles)) for s in samples}


def record_styles(output: Path, styles: Sequence[str], seed: int,
                  assignment: dict[str, str]) -> dict[str, int]:
    """Write OUTPUT/prompt_styles.json; returns the count per style."""
    drawn = Counter(assignment.values())
    counts = {s: drawn.get(s, 0) for s in styles}
    data = {"seed": seed, "styles": list(styles), "counts": counts, "assignment": assignment}
    output.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output / STYLES_FILE, data, indent=1)
    return counts
