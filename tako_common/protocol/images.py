"""The image optimizer's settings as a release carries them (``[images]`` resolved).

Rules:

- :class:`ImageSettings` is ``[images]`` with its defaults filled in by the client
  (:data:`~tako_common.images.DEFAULT_SIZES` and friends); it travels inside the release
  manifest of ``deploy`` (so a rollback brings back the release's own settings, and a
  restart restores them from the state database);
- the server checks it again (it never trusts the client): patterns by the rules of
  :mod:`tako_common.images`, sizes 1..16384, qualities 1..100, formats from
  :data:`~tako_common.images.FORMATS`, every list non-empty, bounded and without
  duplicates (``remote_patterns`` may be empty: no remote image is allowed then).
"""

from __future__ import annotations

from typing import Annotated, Literal, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict

from tako_common.images import (
    DEFAULT_FORMATS,
    DEFAULT_LOCAL_PATTERNS,
    DEFAULT_QUALITIES,
    DEFAULT_SIZES,
    MAX_SIZE,
    check_local_pattern,
    parse_remote_pattern,
)

MAX_ITEMS = 64


def _remote(value: str) -> str:
    parse_remote_pattern(value)
    return value


def _distinct(values: list[str] | list[int]) -> list[str] | list[int]:
    seen: set[object] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{value!r} is listed twice")
        seen.add(value)
    return values


LocalPatternText = Annotated[str, AfterValidator(check_local_pattern)]
RemotePatternText = Annotated[str, AfterValidator(_remote)]
Width = Annotated[int, Strict(), Field(ge=1, le=MAX_SIZE)]
Quality = Annotated[int, Strict(), Field(ge=1, le=100)]
ImageFormat = Literal["webp", "avif", "jpeg", "png"]


class ImageSettings(BaseModel):
    """``[images]`` of a release (see the module rules)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    local_patterns: Annotated[
        list[LocalPatternText], Field(min_length=1, max_length=MAX_ITEMS), AfterValidator(_distinct)
    ] = Field(default_factory=lambda: list(DEFAULT_LOCAL_PATTERNS))
    remote_patterns: Annotated[
        list[RemotePatternText], Field(max_length=MAX_ITEMS), AfterValidator(_distinct)
    ] = Field(default_factory=list)
    sizes: Annotated[
        list[Width], Field(min_length=1, max_length=MAX_ITEMS), AfterValidator(_distinct)
    ] = Field(default_factory=lambda: list(DEFAULT_SIZES))
    qualities: Annotated[
        list[Quality], Field(min_length=1, max_length=MAX_ITEMS), AfterValidator(_distinct)
    ] = Field(default_factory=lambda: list(DEFAULT_QUALITIES))
    formats: Annotated[
        list[ImageFormat], Field(min_length=1, max_length=4), AfterValidator(_distinct)
    ] = Field(default_factory=lambda: cast(list[ImageFormat], list(DEFAULT_FORMATS)))
