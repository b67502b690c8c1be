"""`cxr-rl serve`'s options as users of `vllm serve` type them: --api-key (or its environment
variable) beside --api-token, --served-model-name defaulting to the --model argument, and the adapter
root that load-by-path is confined to."""

import argparse

import pytest

from rollout_server.commands import register, server_config_from_args


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


@pytest.fixture(autouse=True)
def no_key_in_environment(monkeypatch):
    for name in ("CXR_RL_API_KEY", "CXR_RL_API_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_api_key_and_api_token_are_the_same_option(monkeypatch):
    assert server_config_from_args(parse(["--model", "m", "--api-key", "k1"])).api_token == "k1"
    assert server_config_from_args(parse(["--model", "m", "--api-token", "k2"])).api_token == "k2"
    assert server_config_from_args(parse(["--model", "m"])).api_token is None
    monkeypatch.setenv("CXR_RL_API_KEY", "from-env")
    assert server_config_from_args(parse(["--model", "m"])).api_token == "from-env"
    assert server_config_from_args(parse(["--model", "m", "--api-key", "flag"])).api_token == "flag"


def test_served_model_name_defaults_to_the_model_argument():
    config = server_config_from_args(parse(["--model", "models/medgemma-4b"]))
    assert config.model_name == "models/medgemma-4b"
    named = server_config_from_args(
        parse(["--model", "models/medgemma-4b", "--served-model-name", "medgemma"])
    )
    assert named.model_name == "medgemma"


def test_adapter_root_is_an_option(tmp_path):
    config = server_config_from_args(parse(["--model", "m", "--adapter-root", str(tmp_path)]))
    assert config.adapter_root == tmp_path
    assert server_config_from_args(parse(["--model", "m"])).adapter_root is None
