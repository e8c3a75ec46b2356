"""Typed flow parameters (``flows.parameters``): a wrong transfer configuration is refused when the
run is submitted, naming the field, before any block is read; a right one still runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.deployments import run_deployment
from prefect.exceptions import PrefectHTTPStatusError
from pydantic import ValidationError

from flows.acquisition import acquisition_flow
from flows.parameters import RedeliveryConfig, TransferConfig, transfer_dict


def test_a_deployment_run_with_a_bad_transfer_is_refused_at_submission(prefect_api: str, tmp_path: Path) -> None:
    deployment = acquisition_flow.to_deployment(name="typed-parameters")
    deployment.apply()
    name = f"{acquisition_flow.name}/typed-parameters"
    acquisition = tmp_path / "microscope" / "vol"  # never created: a submission that got through would fail later
    parameters = {"acquisition": str(acquisition), "outbox": str(tmp_path / "outbox")}
    refusals = {
        "destination": {"kind": "local"},
        "destinaton": {"kind": "local", "destination": "/in", "destinaton": "/in2"},
        "ftp": {"kind": "ftp", "destination": "/in"},
        "source_root": {"kind": "globus", "source_collection": "a", "destination_collection": "b",
                        "destination_root": "/i"},
    }  # fmt: skip
    for field, transfer in refusals.items():
        with pytest.raises(PrefectHTTPStatusError) as refused:
            run_deployment(name, parameters={**parameters, "transfer": transfer}, timeout=0)
        detail = refused.value.response.json()["detail"]
        assert "Validation failed for field 'transfer" in detail and field in detail, detail
    for field, codec in {"effort": {"effort": 9}, "widht": {"widht": 32}, "codec": {"codec": "png"}}.items():
        with pytest.raises(PrefectHTTPStatusError) as refused:
            run_deployment(
                name,
                parameters={**parameters, "transfer": {"kind": "local", "destination": "/in"}, "codec": codec},
                timeout=0,
            )
        detail = refused.value.response.json()["detail"]
        assert "Validation failed for field 'codec" in detail and field in detail, detail
    assert not (tmp_path / "outbox").exists()  # nothing ran
    accepted = run_deployment(
        name, parameters={**parameters, "transfer": {"kind": "local", "destination": str(tmp_path / "in")}}, timeout=0
    )
    assert accepted.parameters["transfer"]["destination"] == str(tmp_path / "in")


def test_the_models_name_the_wrong_field() -> None:
    with pytest.raises(ValidationError, match="destination"):
        RedeliveryConfig.model_validate({"outbox": "/o", "transfer": {"kind": "local"}})
    with pytest.raises(ValidationError, match="source_root"):
        TransferConfig.model_validate(
            {"kind": "globus", "source_collection": "a", "destination_collection": "b", "destination_root": "/i"}
        )
    with pytest.raises(ValidationError, match="destinaton"):  # a misspelt field is an error, not ignored
        TransferConfig.model_validate({"kind": "local", "destination": "/i", "destinaton": "/j"})
    assert transfer_dict(TransferConfig(destination="/i")) == {"kind": "local", "destination": "/i"}
