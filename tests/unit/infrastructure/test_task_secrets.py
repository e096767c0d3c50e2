"""The infrastructure of task secrets: the Fernet secret box (keys, rotation, wrong keys) and
the process's registry of the secrets of runs in progress."""

from __future__ import annotations

import json
import logging
import threading

import pytest

from scheduler_application.errors import SecretUnreadable
from scheduler_infrastructure.config import Settings
from scheduler_infrastructure.config.settings import SecretsSettings
from scheduler_infrastructure.factories import build_secret_box
from scheduler_infrastructure.logging_setup import JsonFormatter
from scheduler_infrastructure.security.secret_box import FernetSecretBox, generate_key
from scheduler_infrastructure.telemetry.redaction import MARK, RunSecrets, SecretRedactor

VALUE = "db-pass-Zr81xw"


def test_sealed_values_differ_every_time_and_hide_the_plaintext() -> None:
    box = FernetSecretBox(keys=[generate_key()])
    first, second = box.seal(VALUE), box.seal(VALUE)
    assert first != second
    assert VALUE not in first
    assert box.open(first) == box.open(second) == VALUE


def test_a_value_sealed_under_another_key_cannot_be_opened() -> None:
    sealed = FernetSecretBox(keys=[generate_key()]).seal(VALUE)
    with pytest.raises(SecretUnreadable):
        FernetSecretBox(keys=[generate_key()]).open(sealed)
    with pytest.raises(SecretUnreadable):
        FernetSecretBox(keys=[generate_key()]).open("not a token")


def test_rotation_new_key_first_seals_and_the_old_one_still_opens() -> None:
    old, new = generate_key(), generate_key()
    before = FernetSecretBox(keys=[old]).seal(VALUE)
    rotating = build_secret_box(Settings(secrets=SecretsSettings(key=f"{new},{old}")))
    assert rotating is not None
    assert rotating.open(before) == VALUE
    after = rotating.seal(VALUE)
    assert FernetSecretBox(keys=[new]).open(after) == VALUE
    with pytest.raises(SecretUnreadable):
        FernetSecretBox(keys=[old]).open(after)


def test_no_key_no_box() -> None:
    assert build_secret_box(Settings()) is None


def test_the_process_redactor_masks_a_runs_secrets_only_while_it_runs() -> None:
    registry = RunSecrets()
    redactor = SecretRedactor(run_secrets=registry)
    formatter = JsonFormatter("worker", redactor)
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "got %s", (VALUE[::-1],), None)
    with registry.hide([VALUE]):
        assert json.loads(formatter.format(record))["message"] == f"got {MARK}"
        with registry.hide([VALUE, "second-secret"]):  # two runs of the same task
            assert redactor.redact("second-secret") == MARK
        assert redactor.redact("second-secret") == "second-secret"
        assert redactor.redact(VALUE) == MARK
    assert redactor.redact(VALUE) == VALUE
    assert len(registry) == 0


def test_the_process_registry_is_safe_across_threads() -> None:
    registry = RunSecrets()
    errors: list[BaseException] = []

    def churn(n: int) -> None:
        try:
            for i in range(200):
                with registry.hide([f"thread-{n}-secret-{i}"]):
                    assert registry.redact(f"thread-{n}-secret-{i}") == MARK
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(registry) == 0


def test_from_settings_masks_the_secrets_key() -> None:
    key = generate_key()
    redactor = SecretRedactor.from_settings(
        Settings(secrets=SecretsSettings(key=key)), environ={}, run_secrets=None
    )
    assert redactor.redact(f"key is {key}") == f"key is {MARK}"
