"""Credentials: which are set, never what they are."""

from __future__ import annotations

import logging

import pytest

from automl_deft.credentials import CREDENTIALS, SET, UNSET, Credential, credential_status

SECRET = "s3cr3t-VALUE-must-not-leak"


def test_every_credential_says_who_needs_it_and_why() -> None:
    names = [c.name for c in CREDENTIALS]
    assert len(names) == len(set(names))
    assert {
        "KF_PIPELINES_TOKEN",
        "KUBECONFIG",
        "HF_TOKEN",
        "NGC_API_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    } <= set(names)
    for c in CREDENTIALS:
        assert isinstance(c, Credential)
        assert c.name.isupper()
        assert c.needed_by.strip()
        assert c.purpose.strip()


def test_status_is_set_or_unset_and_empty_counts_as_unset() -> None:
    env = {"KF_PIPELINES_TOKEN": SECRET, "HF_TOKEN": "", "UNRELATED": "x"}
    status = {name: (state, purpose) for name, state, purpose in credential_status(env)}
    assert [name for name, *_ in credential_status(env)] == [c.name for c in CREDENTIALS]
    assert status["KF_PIPELINES_TOKEN"][0] == SET
    assert status["HF_TOKEN"][0] == UNSET
    assert status["KUBECONFIG"][0] == UNSET
    assert "UNRELATED" not in status
    assert all(purpose for _, purpose in status.values())


def test_status_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for c in CREDENTIALS:
        monkeypatch.delenv(c.name, raising=False)
    monkeypatch.setenv("NGC_API_KEY", SECRET)
    assert {name: state for name, state, _ in credential_status()}["NGC_API_KEY"] == SET
    assert {state for name, state, _ in credential_status() if name != "NGC_API_KEY"} == {UNSET}


def test_a_secret_value_never_appears_in_any_output(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    for c in CREDENTIALS:
        monkeypatch.setenv(c.name, SECRET)
    caplog.set_level(logging.DEBUG)
    log = logging.getLogger("test.credentials")
    status = credential_status()
    rows = [f"{name:24} {state:5} {purpose}" for name, state, purpose in status]
    print("\n".join(rows))
    log.info("credentials: %s", status)
    log.info("%r", CREDENTIALS)
    outputs = [repr(status), repr(CREDENTIALS), str(status), *map(repr, CREDENTIALS)]
    captured = capsys.readouterr()
    outputs += [captured.out, captured.err, caplog.text]
    outputs += [str(record.args) for record in caplog.records]
    assert {state for _, state, _ in status} == {SET}
    assert all(SECRET not in text for text in outputs)
