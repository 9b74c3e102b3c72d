"""Judge panels: who judges. A panel is a list of members, each a judge spec on a model behind a backend.

`--judge-config FILE`, a YAML list (or a mapping with a `judges:` list):

    - name: gpt4o-mini            # unique in the panel; the column and file key
      spec: rarl_v1               # a judge spec (see `medharness ls judges`)
      backend: openai             # openai | gemini | hf | vllm | hf_lm (a local text-only causal LM)
      model: gpt-4o-mini
      base_url: https://api.openai.com/v1     # optional
      api_key_env: OPENAI_API_KEY             # optional: the variable holding the key (never the key)
      options: {concurrency: 8, timeout: 60, max_retries: 5}   # optional backend options

`--judges SPEC:BACKEND:MODEL,...` is the shorthand for simple cases (names are derived; `--judge-base-url`
and `--judge-api-key-env` apply to every shorthand member).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import ValidationError, field_validator

from medharness.backends import BACKENDS, check_options
from medharness.core.errors import ConfigError
from medharness.core.records import PanelMember
from medharness.core.secrets import scrub_value
from medharness.judges.specs import JudgeSpec, get_spec

JUDGE_BACKENDS = ("openai", "gemini", "hf", "vllm", "hf_lm")
BACKENDS.add_lazy("hf_lm", "medharness.judges.local_lm:LocalLMBackend")  # BioGPT, BioMistral: base text LMs


class JudgeMember(PanelMember):
    """One panel member (the fields are `records.PanelMember`'s), checked: a known backend and spec."""

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if v not in JUDGE_BACKENDS:
            raise ValueError(f"judge backend {v!r}: choose one of {', '.join(JUDGE_BACKENDS)}")
        return v

    @property
    def judge_spec(self) -> JudgeSpec:
        return get_spec(self.spec)

    def backend_options(self) -> dict[str, Any]:
        options = dict(self.options)
        for key in ("base_url", "api_key_env"):
            if getattr(self, key) is not None:
                options[key] = getattr(self, key)
        return options

    def public(self) -> dict[str, Any]:
        """What run.json records about the member (the key's variable name, never a key; a URL without its
        credentials)."""
        return scrub_value(self.model_dump())


def _check(members: list[JudgeMember], origin: str) -> list[JudgeMember]:
    if not members:
        raise ConfigError(f"{origin}: the panel has no judges")
    seen: set[str] = set()
    for m in members:
        if m.name in seen:
            raise ConfigError(f"{origin}: two judges are named {m.name!r}; names must be unique")
        seen.add(m.name)
        m.judge_spec  # noqa: B018 - an unknown spec fails here, with "did you mean"
        check_options(m.backend, m.backend_options(), what=f"option of judge {m.name!r}")
    return members


def load_panel(path: Path) -> list[JudgeMember]:
    """Read a `--judge-config` YAML file; every error names the file, the line and the judge."""
    from medharness.core.yamlio import line_of, load_yaml_with_lines

    if not path.exists():  # a directory, a FIFO or a device: the YAML reader names it
        raise ConfigError(f"--judge-config {path}: no such file")
    data, lines = load_yaml_with_lines(path)
    root: tuple[str, ...] = ()
    if isinstance(data, dict) and set(data) == {"judges"}:
        data, root = data["judges"], ("judges",)
    if not isinstance(data, list):
        raise ConfigError(f"{path}: expected a list of judges (or a mapping with a 'judges' list)")
    members = []
    for i, entry in enumerate(data):
        name = f" ({entry.get('name')})" if isinstance(entry, dict) and entry.get("name") else ""
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}:{line_of(lines, (*root, i))}: judge {i + 1}: expected a mapping "
                              "with name, spec, backend, model")
        try:
            members.append(JudgeMember.model_validate(entry))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(err["loc"])
            where = ".".join(str(p) for p in loc) or "entry"
            raise ConfigError(f"{path}:{line_of(lines, (*root, i, *loc))}: judge {i + 1}{name}: {where}: "
                              f"{err['msg']}") from None
    return _check(members, str(path))


def parse_judges(text: str, base_url: str | None = None, api_key_env: str | None = None) -> list[JudgeMember]:
    """`SPEC:BACKEND:MODEL[,...]` -> members named `SPEC-BACKEND-MODEL` (the model's last path part)."""
    members = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        spec, backend, model = (item.split(":", 2) + ["", ""])[:3]
        if not (spec and backend and model):
            raise ConfigError("--judges expects SPEC:BACKEND:MODEL (e.g. rarl_v1:openai:gpt-4o-mini), got "
                              f"{item!r}")
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model).name or model).strip("-")
        try:
            members.append(JudgeMember(name=f"{spec}-{backend}-{slug}", spec=spec, backend=backend,
                                       model=model,
                                       base_url=base_url if backend in ("openai", "gemini") else None,
                                       api_key_env=api_key_env if backend in ("openai", "gemini") else None))
        except ValidationError as exc:
            raise ConfigError(f"--judges {item!r}: {exc.errors()[0]['msg']}") from None
    return _check(members, "--judges")


def panel_from_args(config: Path | None, judges: str | None, base_url: str | None = None,
                    api_key_env: str | None = None) -> list[JudgeMember]:
    """The panel named on the command line (`--judge-config` and/or `--judges`); [] when neither."""
    members = ((load_panel(config) if config else [])
               + (parse_judges(judges, base_url, api_key_env) if judges else []))
    return _check(members, "the judge panel") if members else []
