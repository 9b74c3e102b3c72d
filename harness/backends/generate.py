"""Generating through the response cache: the one path the run loop, judging and training rewards share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from medharness.backends.base import Backend, Request
from medharness.backends.cache import ResponseCache, cache_key
from medharness.core.records import Generation


@dataclass(frozen=True)
class Generated:
    """One request's generation, whether it came from the cache, and its cache key (None: no cache in use)."""

    generation: Generation
    cached: bool
    key: str | None


def generate_cached(backend: Backend, requests: Sequence[Request], cache: ResponseCache | None,
                    keys: Sequence[str] | None = None, store: bool = True) -> list[Generated]:
    """Generate every request through the response cache, in request order: hits from `cache`, misses from
    `backend.generate` (stored unless `store=False`: a caller that keeps only some replies, like the judges,
    stores them itself). `keys` default to `cache_key(fingerprint, prompt, images)`, computed only when a
    cache is in use (hashing every image costs ~10 % of a --no-cache evaluation). A request the backend
    dropped gets a failed Generation, never a crash. The one path the run loop, judging and rewards share."""
    if not requests:
        return []
    use_cache = cache is not None and backend.cacheable
    found: Sequence[str | None]
    if keys is not None:
        found = keys
    elif use_cache:
        found = [cache_key(backend.fingerprint, r.prompt, r.images) for r in requests]
    else:
        found = [None] * len(requests)
    hits = cache.get_many([k for k in found if k is not None]) if use_cache and cache is not None else {}
    misses = [(k, r) for k, r in zip(found, requests, strict=True) if k is None or k not in hits]
    fresh = backend.generate([r for _, r in misses]) if misses else []
    if use_cache and cache is not None and store:
        cache.put_many((k, g) for (k, _), g in zip(misses, fresh, strict=False) if k is not None)
    fresh_by_id = {g.sample_id: g for g in fresh}
    out = []
    for key, request in zip(found, requests, strict=True):
        sid = request.prompt.sample_id
        if key is not None and key in hits:
            out.append(Generated(hits[key].model_copy(update={"sample_id": sid}), True, key))
        else:
            gen = fresh_by_id.get(sid) or Generation(sample_id=sid, text="", model=backend.fingerprint,
                                                     error="backend returned no generation")
            out.append(Generated(gen, False, key))
    return out
