"""Settings: defaults, environment, flag precedence, one-line errors."""

from __future__ import annotations

import pydantic
import pytest

from charon.errors import ConfigError
from charon.settings import Settings, describe_setting, env_name, environment, invalid_setting, load_settings


def test_defaults_match_the_documented_ports() -> None:
    s = load_settings()
    assert s.server.bind == "tcp://*:5555"
    assert s.router.bind == "tcp://*:5555"
    assert s.router.workers_bind == "tcp://*:6667"
    assert s.router.queue_max_requests == 10_000
    assert s.router.queue_deadline_s == 300.0
    assert s.worker.reconnect_initial_s == 1.0
    assert s.worker.reconnect_max_s == 32.0
    assert s.worker.reconnect_max_attempts == 0


def test_environment_is_read_with_nested_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARON_ROUTER__QUEUE_DEADLINE_S", "12.5")
    monkeypatch.setenv("CHARON_ENGINE__BACKEND", "echo")
    s = load_settings()
    assert s.router.queue_deadline_s == 12.5
    assert s.engine.backend == "echo"


def test_overrides_beat_environment_and_keep_other_env_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARON_ENGINE__SEED", "5")
    monkeypatch.setenv("CHARON_ENGINE__MAX_STEPS", "77")
    s = load_settings({"engine": {"seed": 9}})
    assert s.engine.seed == 9
    assert s.engine.max_steps == 77


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(pydantic.ValidationError):
        s.router.queue_max_requests = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"engine": {"seed": "abc"}}, "engine.seed"),
        ({"engine": {"backend": "gpu"}}, "allowed: 'builtin', 'numpy', 'echo' or 'chroma'"),
        ({"router": {"bind": "localhost:5555"}}, "router.bind"),
        ({"heartbeat": {"liveness": 1}}, "heartbeat.liveness"),
        ({"worker": {"reconnect_initial_s": 10, "reconnect_max_s": 1}}, "reconnect_max_s"),
        ({"server": {"bind": "tcp://*:99999"}}, "server.bind (--bind / CHARON_SERVER__BIND) = 'tcp://*:99999'"),
        ({"router": {"queue_deadline_s": -1}}, "router.queue_deadline_s (CHARON_ROUTER__QUEUE_DEADLINE_S) = -1"),
        ({"server": {"bind": "tcp://*:99999"}}, "port above 65535 (got 99999)"),
        ({"metrics": {"addr": "127.0.0.1:65536"}}, "port above 65535 (got 65536)"),
        ({"gateway": {"router": "tcp://[::1]:70000"}}, "gateway.router"),
    ],
)
def test_invalid_values_give_one_readable_line(overrides: dict[str, dict[str, object]], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(overrides)  # type: ignore[arg-type]
    message = str(info.value)
    assert needle in message
    assert "\n" not in message


def test_highest_port_and_ipc_paths_with_colons_are_valid() -> None:
    s = load_settings({"server": {"bind": "tcp://*:65535"}, "metrics": {"addr": ":65535"},
                       "client": {"endpoint": "ipc:///tmp/a:99999"}})
    assert s.server.bind == "tcp://*:65535"
    assert s.client.endpoint == "ipc:///tmp/a:99999"


def test_error_names_flag_and_environment_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"engine": {"seed": -1}})
    assert "--seed / CHARON_ENGINE__SEED" in str(info.value)
    assert "-1" in str(info.value)
    assert info.value.setting == "engine.seed"
    assert info.value.exit_status == 2


def test_one_helper_describes_any_setting() -> None:
    assert describe_setting("engine.detector") == "engine.detector (--detector / CHARON_ENGINE__DETECTOR)"
    assert describe_setting("router.max_attempts") == "router.max_attempts (CHARON_ROUTER__MAX_ATTEMPTS)"
    err = invalid_setting("gateway.listen", "ipc:///x", "FlukaIO needs tcp://HOST:PORT")
    assert str(err) == ("invalid setting gateway.listen (--listen / CHARON_GATEWAY__LISTEN) = 'ipc:///x': "
                        "FlukaIO needs tcp://HOST:PORT")
    assert err.setting == "gateway.listen"


def test_environment_reproduces_the_settings_in_a_child(monkeypatch: pytest.MonkeyPatch) -> None:
    original = load_settings({"engine": {"backend": "echo", "seed": 7, "detector": "/d/det.npz", "device": "cpu"},
                              "server": {"legacy_pong": True}, "gateway": {"router": "tcp://h:5555"},
                              "heartbeat": {"interval_s": 0.25}})
    env = environment(original)
    assert "CHARON_METRICS__ADDR" not in env  # unset stays unset
    assert env["CHARON_SERVER__LEGACY_PONG"] == "true"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert load_settings() == original


def test_env_name() -> None:
    assert env_name(("router", "queue_deadline_s")) == "CHARON_ROUTER__QUEUE_DEADLINE_S"


def test_every_field_has_a_description() -> None:
    for section_name, section in Settings.model_fields.items():
        model = section.annotation
        assert model is not None
        for name, field in model.model_fields.items():  # type: ignore[union-attr]
            assert field.description, f"{section_name}.{name} has no description"
