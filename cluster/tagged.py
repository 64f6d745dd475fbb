"""The YAML form of a tagged choice: `{prune: {final_sparsity: 0.8}}` stands for
`{technique: prune, final_sparsity: 0.8}`. Specs write augmentations and
compression steps this way; pydantic validates the flat form."""

from __future__ import annotations

from typing import Any


def flat_form(entry: Any, tag: str, known: tuple[str, ...], example: str) -> Any:
    """`{name: {options}}` (or a bare `name`) -> `{tag: name, **options}`; anything else passes through."""
    if isinstance(entry, str):
        entry = {entry: None}
    if not isinstance(entry, dict) or tag in entry:
        return entry
    if len(entry) != 1:
        raise ValueError(f"each entry is one of {', '.join(known)} with its options, e.g. {example}; "
                         f"got keys {sorted(entry)}")
    (name, options), = entry.items()
    options = {} if options is None else options
    if not isinstance(options, dict):
        raise ValueError(f"options of {name} must be a mapping, got {options!r}")
    if name not in known:
        raise ValueError(f"unknown {tag} {name!r}; known: {', '.join(known)}")
    return {tag: name, **options}
