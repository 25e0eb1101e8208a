"""JSON values a model's ``full_clean()`` can't encode (nested past the stack, an
integer of 5,000 digits, a value that contains itself): refused as the
ValidationError Django's callers catch, writing nothing, the transaction usable."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction

from django_pgjobs.models import Connector, Schedule


def nested(levels: int) -> list:
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


def containing_itself() -> dict:
    value: dict = {"url": "http://127.0.0.1:9/"}
    value["headers"] = value
    return value


ODD_CONFIGS = {
    "nested 3,000 deep": {"url": "http://127.0.0.1:9/", "headers": {"a": nested(3000)}},
    "an integer of 5,000 digits": {"url": "http://127.0.0.1:9/", "timeout": 10**5000},
    "containing itself": containing_itself(),
}


@pytest.mark.parametrize("config", ODD_CONFIGS.values(), ids=list(ODD_CONFIGS))
def test_full_clean_refuses_a_config_json_can_t_encode(db, config):
    """Django's JSONField.validate catches json.dumps' TypeError only: RecursionError
    and ValueError came out of full_clean(), where a form or caller expects
    ValidationError."""
    with transaction.atomic():
        with pytest.raises(ValidationError) as refused:
            Connector(name="hook", kind="http", config=config).full_clean()
        assert "config" in refused.value.message_dict
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    assert not Connector.objects.exists()


def test_full_clean_refuses_schedule_args_json_can_t_encode(db):
    schedule = Schedule(
        name="s", task="testproject.demo.tasks.add", cron="* * * * *", args=[nested(3000)]
    )
    with pytest.raises(ValidationError) as refused:
        schedule.full_clean()
    assert "args" in refused.value.message_dict
    assert not Schedule.objects.exists()
