"""Typed flow parameters: Prefect validates them when a run is submitted, and the UI shows a form.

A transfer configuration used to be a ``dict`` read key by key in the middle of a run, so a
misspelt or missing field failed with a ``KeyError`` after blocks were already coded. As a
pydantic model it is part of a deployment's parameter schema:

- the server refuses a run whose ``transfer`` is wrong before anything runs, naming the field;
- the Prefect UI renders a form instead of a JSON box.

One model with a ``kind`` (local or Globus) rather than a union of two: the server checks
parameters with JSON Schema, and for a union it reports the alternative that failed last ("'globus'
was expected" for a local configuration that lacks its destination). Here the fields each kind
needs are ``if``/``then`` rules of the schema, so the refusal names the missing field, and
``extra="forbid"`` refuses a misspelt one. The plain functions under ``tasks/`` keep taking plain
dicts (``transfer_dict``): they are not Prefect's business.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "REQUIRED_BY_KIND",
    "CodecParameters",
    "RedeliveryConfig",
    "TransferConfig",
    "codec_overrides",
    "transfer_dict",
]

#: The fields each backend needs (``tasks.edge.shipping.backend_from_config``).
REQUIRED_BY_KIND: dict[str, tuple[str, ...]] = {
    "local": ("destination",),
    "globus": ("source_collection", "destination_collection", "source_root", "destination_root"),
}


def _required_rules() -> list[Any]:
    return [
        {"if": {"properties": {"kind": {"const": kind}}}, "then": {"required": list(fields)}}
        for kind, fields in REQUIRED_BY_KIND.items()
    ]


class TransferConfig(BaseModel):
    """Where the edge ships its blocks: a folder (``local``) or a Globus transfer (``globus``).

    The Globus client secret comes from ``EMZIP_GLOBUS_CLIENT_SECRET`` or the Prefect Secret block
    named by ``secret_block``, never from here.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={"allOf": _required_rules()})

    kind: Literal["local", "globus"] = Field(default="local", description="local folder, or Globus")
    destination: str | None = Field(default=None, min_length=1, description="local: the data center inbox folder")
    source_collection: str | None = Field(default=None, min_length=1, description="globus: the outbox's collection id")
    destination_collection: str | None = Field(
        default=None, min_length=1, description="globus: the inbox's collection id"
    )
    source_root: str | None = Field(
        default=None, min_length=1, description="globus: the outbox's path in its collection"
    )
    destination_root: str | None = Field(
        default=None, min_length=1, description="globus: the inbox's path in its collection"
    )
    mapped_collections: list[str] | None = Field(default=None, description="globus: collections needing consent")
    client_id: str | None = Field(default=None, description="globus: else EMZIP_GLOBUS_CLIENT_ID")
    secret_block: str | None = Field(default=None, description="globus: Prefect Secret block with the client secret")
    token_storage: str | None = Field(default=None, description="globus: 'memory' (default) or a token file")
    poll_seconds: float | None = Field(default=None, gt=0, description="globus: seconds between status polls")
    timeout_seconds: float | None = Field(default=None, gt=0, description="globus: give up on a task after this")

    @model_validator(mode="after")
    def _fields_of_its_kind(self) -> TransferConfig:
        missing = [name for name in REQUIRED_BY_KIND[self.kind] if getattr(self, name) is None]
        if missing:
            raise ValueError(f"a {self.kind} transfer needs {', '.join(missing)}")
        return self


class RedeliveryConfig(BaseModel):
    """Where the data center asks for a damaged container again: the edge's outbox and its backend."""

    model_config = ConfigDict(extra="forbid")

    outbox: str = Field(min_length=1, description="The edge's outbox the containers are delivered from")
    transfer: TransferConfig


def transfer_dict(config: TransferConfig | dict[str, Any]) -> dict[str, Any]:
    """The plain dict ``tasks.edge.shipping.backend_from_config`` takes, from a model or a dict."""
    if isinstance(config, BaseModel):
        return config.model_dump(exclude_none=True)
    return dict(config)


class CodecParameters(BaseModel):
    """The ``codec.Settings`` fields a run sets; a field left out keeps the codec's default.

    The ranges are those ``Settings.validated`` enforces, so a wrong value is refused when the run
    is submitted rather than when the first block is coded.
    """

    model_config = ConfigDict(extra="forbid")

    effort: int | None = Field(default=None, ge=0, le=4, description="training budget 0-4 (default 2)")
    steps: int | None = Field(default=None, ge=0, description="training steps, overriding effort")
    codec: Literal["auto", "learned", "jpegxl", "lzma"] | None = Field(default=None, description="default auto")
    family: Literal["auto", "laplace", "gaussian"] | None = Field(default=None, description="default auto")
    width: int | None = Field(default=None, ge=8, le=64, multiple_of=8, description="hidden units (default 16)")
    stripes: int | None = Field(default=None, ge=1, le=64, description="row bands decoded on threads (default 2)")
    device: str | None = Field(default=None, description="auto (CUDA when present), cpu or cuda[:N]")
    seed: int | None = Field(default=None, description="training seed (default 0)")
    fallback_effort: int | None = Field(default=None, ge=1, le=10, description="JPEG-XL effort (default 7)")
    verify: bool | None = Field(default=None, description="also decode in-process before returning")


def codec_overrides(codec: CodecParameters | dict[str, Any] | None) -> dict[str, Any]:
    """The fields a run set, as ``Settings.with_overrides`` takes them."""
    if codec is None:
        return {}
    if isinstance(codec, BaseModel):
        return codec.model_dump(exclude_none=True)
    return dict(codec)
