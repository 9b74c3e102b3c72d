"""Data sources: where a task's samples come from, and how their images are opened (lazily).

Kinds: `local` and `npz` (`files`: files under the data dir), `hf` (`hub`: Hugging Face `datasets`), `phantom`
(`phantom`: generated), `voc` and `ham10000` (`detection`: boxes and lesions). `base` holds what they share.
A source gets what it needs from its task as `LoadParams` (name, default columns, filter) and, when it reads
local files, the data root (`bind`); it never imports the task. Each source turns raw rows into `Sample`s;
images are references that only `open_image` decodes, so scoring never touches pixels. Every kind answers
`available(root, split)`, `label(split)`, `load(params, split)` and `open_image(ref)`.
"""

from typing import Annotated, Any

from pydantic import Field

from medharness.taskfiles.sources.base import Columns, LoadParams, LocalFiles, Resize, rows_to_samples
from medharness.taskfiles.sources.detection import Ham10000Source, VocSource
from medharness.taskfiles.sources.files import LocalSource, NpzSource
from medharness.taskfiles.sources.hub import HubSource
from medharness.taskfiles.sources.phantom import PhantomSource

SourceSpec = Annotated[LocalSource | NpzSource | HubSource | PhantomSource | VocSource | Ham10000Source,
                       Field(discriminator="kind")]


def source_label(source: Any, split: str) -> str:
    """How reports and errors name a source's split, e.g. `local test.json` or `hub org/set
    [test]@default`."""
    return str(source.label(split))


__all__ = ["Columns", "Ham10000Source", "HubSource", "LoadParams", "LocalFiles", "LocalSource", "NpzSource",
           "PhantomSource", "Resize", "SourceSpec", "VocSource", "rows_to_samples", "source_label"]
