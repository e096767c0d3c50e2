"""The console's template forms: a schema's parameters as inputs, the posted inputs back into
the JSON the use cases take (typed, empty inputs left out, a bad value naming
``params.<name>``), and a template's whole form as a PATCH that clears a removed policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from scheduler_api.console.template_forms import (
    param_inputs,
    subscription_body,
    template_body,
    template_form,
)
from scheduler_domain.errors import ValidationError
from scheduler_domain.schedules import IntervalSchedule
from scheduler_domain.template import ScheduleBounds, Template

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "where"},
        "days": {"type": "integer", "default": 1},
        "ratio": {"type": "number"},
        "loud": {"type": "boolean"},
        "units": {"enum": ["metric", "imperial", 3]},
        "stops": {"type": "array"},
    },
    "required": ["city"],
}
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def _template(schema: dict[str, object] = SCHEMA) -> Template:
    return Template(
        name="weather",
        executor="noop",
        params_schema=schema,
        schedule=IntervalSchedule(timedelta(hours=1)),
        bounds=ScheduleBounds(min_interval=timedelta(minutes=5)),
        policies={"queue": "vendor", "priority": 3},
        created_by="olga",
        created_at=T0,
        updated_at=T0,
    )


def test_each_declared_parameter_gets_an_input_of_its_kind() -> None:
    inputs = {i.name: i for i in param_inputs(SCHEMA)}
    kinds = {name: i.kind for name, i in inputs.items()}
    assert kinds == {
        "city": "string",
        "days": "integer",
        "ratio": "number",
        "loud": "boolean",
        "units": "enum",
        "stops": "json",
    }
    assert (inputs["city"].required, inputs["city"].description) == (True, "where")
    assert (inputs["days"].required, inputs["days"].default) == (False, "1")
    assert inputs["units"].choices == ("metric", "imperial", "3")
    assert inputs["loud"].choices == ("true", "false")
    assert param_inputs({"type": "object"}) == []


def test_posted_inputs_become_typed_params_and_empty_ones_are_left_out() -> None:
    body = subscription_body(
        _template(),
        {
            "param.city": " Oslo ",
            "param.days": "3",
            "param.ratio": "0.5",
            "param.loud": "false",
            "param.units": "3",
            "param.stops": '["a", "b"]',
            "param.unknown": "ignored",
            "schedule_every": "600",
            "team": "ops",
        },
    )
    assert body == {
        "params": {
            "city": "Oslo",
            "days": 3,
            "ratio": 0.5,
            "loud": False,
            "units": 3,
            "stops": ["a", "b"],
        },
        "schedule": {"interval_seconds": 600},
        "team": "ops",
    }
    assert subscription_body(_template(), {"param.days": ""}) == {"params": {}}
    cron = subscription_body(_template(), {"schedule_cron": "0 6 * * *"})
    assert cron["schedule"] == {"cron": "0 6 * * *", "timezone": "UTC"}


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"param.days": "three"}, "params.days"),
        ({"param.ratio": "half"}, "params.ratio"),
        ({"param.stops": "[1,"}, "params.stops"),
        ({"schedule_every": "often"}, "schedule.interval_seconds"),
        ({"schedule_every": "60", "schedule_cron": "* * * * *"}, "schedule"),
    ],
)
def test_a_bad_input_names_its_field(form: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as refused:
        subscription_body(_template(), form)
    assert refused.value.field == field


def test_a_schema_without_properties_takes_one_json_object() -> None:
    loose = _template({"type": "object"})
    assert subscription_body(loose, {"params_json": '{"a": 1}'}) == {"params": {"a": 1}}
    with pytest.raises(ValidationError) as refused:
        subscription_body(loose, {"params_json": "[1]"})
    assert refused.value.field == "params"


def test_the_template_form_round_trips_and_clears_a_removed_policy() -> None:
    template = _template()
    values = template_form(template)
    assert values["version"] == "1"
    assert values["min_interval_seconds"] == "300"
    body = template_body({**values, "policies": '{"queue": "vendor"}'}, current=template)
    assert body["policies"] == {"queue": "vendor", "priority": None}
    assert body["schedule"] == {"interval_seconds": 3600}
    assert body["schedule_bounds"] == {"min_interval_seconds": 300, "allow_custom": True}
    assert template_body({**values, "allow_custom": ""})["schedule_bounds"]["allow_custom"] is False
    for key, text in (("params", "[]"), ("policies", "{oops"), ("schedule", "{")):
        with pytest.raises(ValidationError) as refused:
            template_body({**values, key: text})
        assert refused.value.field == key
