"""Answer parsers: raw model text -> Answer. Unparseable is Answer(value=None), never an exception.

`base` holds the registry (`PARSERS`, `@parser`) and `ParserChain`; the built-ins register themselves when
this package imports them: `text` (raw, short_answer, boxed, answer_tag, think, yes_no, integer, ...) and
`structured` (choice, label, json_bbox). Built-in modules import `base`, never this package.
"""

from medharness.scoring.boxes import from_absolute, to_absolute
from medharness.scoring.parsers import structured, text
from medharness.scoring.parsers.base import (
    END_MARKERS,
    PARSERS,
    ParserChain,
    ParserFn,
    StepSpec,
    parser,
    split_spec,
    strip_end_markers,
)

__all__ = ["END_MARKERS", "PARSERS", "ParserChain", "ParserFn", "StepSpec", "from_absolute", "parser",
           "split_spec", "strip_end_markers", "structured", "text", "to_absolute"]
