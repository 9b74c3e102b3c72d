"""The one Registry: decorator registration, lazy entries, duplicate refusal, did-you-mean."""

from __future__ import annotations

import pytest

from medharness.core.errors import ConfigError
from medharness.core.registry import Registry


def test_decorator_and_lookup() -> None:
    reg: Registry[object] = Registry("widget")

    @reg.register("round_thing")
    def round_thing() -> str:
        return "o"

    assert reg.get("round_thing") is round_thing
    assert reg.names() == ["round_thing"]
    assert "round_thing" in reg


def test_duplicate_refused() -> None:
    reg: Registry[int] = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("a", 2)


def test_lazy_entry_imported_on_first_use() -> None:
    reg: Registry[object] = Registry("widget")
    reg.add_lazy("dumps", "json:dumps")
    import json

    assert reg.get("dumps") is json.dumps


def test_bad_lazy_target_refused() -> None:
    with pytest.raises(ConfigError, match="module:attr"):
        Registry("widget").add_lazy("x", "json.dumps")


def test_did_you_mean() -> None:
    reg: Registry[int] = Registry("metric")
    reg.register("exact_match", 1)
    reg.register("token_f1", 2)
    with pytest.raises(ConfigError) as err:
        reg.get("exact")
    assert "unknown metric 'exact'" in str(err.value)
    assert "Did you mean 'exact_match'?" in str(err.value)
    assert "Available: exact_match, token_f1" in str(err.value)


def test_real_registries_are_populated() -> None:
    from medharness.backends import BACKENDS
    from medharness.scoring.conventions import CONVENTIONS
    from medharness.scoring.metrics import METRICS
    from medharness.scoring.parsers import PARSERS

    assert {"boxed", "answer_tag", "think", "json_bbox", "choice", "yes_no",
            "short_answer"} <= set(PARSERS.names())
    assert {"exact_match", "token_f1", "iou", "mfrs", "qwk", "bleu"} <= set(METRICS.names())
    assert {"hf", "replay", "baseline"} <= set(BACKENDS.names())
    assert {"harness", "mumc", "lmms_eval", "yesno_strict", "llava_med",
            "set_token_f1"} <= set(CONVENTIONS.names())


def test_lazy_entry_replaced_when_its_module_registers_itself() -> None:
    import sys
    import types

    module = types.ModuleType("fake_backend_mod")
    sys.modules["fake_backend_mod"] = module
    reg: Registry[object] = Registry("backend")
    reg.add_lazy("fake", "fake_backend_mod:Fake")

    class Fake:
        pass

    Fake.__module__ = "fake_backend_mod"
    module.Fake = Fake  # type: ignore[attr-defined]
    reg.register("fake", Fake)  # what the module's own decorator does on import
    assert reg.get("fake") is Fake
    with pytest.raises(ConfigError, match="already registered"):
        reg.register("fake", Fake)
