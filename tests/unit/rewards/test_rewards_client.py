"""The reward registry, the result checks and the client's carried state, with rewards in process
(the Ray and HTTP backends are in tests/integration/test_reward_workers.py)."""

import json

import pytest

from rewards.client import RewardClient
from rewards.nuanced import NuancedReward
from rewards.protocol import RewardError, score_request
from rewards.registry import load_reward
from shared.schemas import RewardItem, RewardRequest

PLUGINS = "tests.unit.rewards.test_rewards_plugins"


def items(*label_sets: list[str], fail: bool = False) -> list[RewardItem]:
    return [
        RewardItem(
            text=f"<think>x</think><solution>{', '.join(labels) or 'No Finding'}</solution>",
            labels=labels,
            n_tokens=300,
            metadata={"fail": fail},
        )
        for labels in label_sets
    ]


def test_builtin_rewards_by_name() -> None:
    assert load_reward("hard").name == "hard"
    nuanced = load_reward("nuanced", {"window_size": 7})
    assert nuanced.name == "nuanced" and nuanced.config.window_size == 7


def test_plugin_by_import_path() -> None:
    reward = load_reward(f"{PLUGINS}:LabelCountReward", {"any": "setting"})
    assert (reward.name, reward.version, reward.config) == ("label-count", "test-1", {"any": "setting"})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no_such_package.rewards:Thing", "cannot import reward plugin 'no_such_package.rewards:Thing'"),
        (f"{PLUGINS}:Missing", "has no callable 'Missing'"),
        (f"{PLUGINS}:NoScoreMethod", "lacks"),
        (f"{PLUGINS}:broken_factory", "cannot build reward"),
        ("jaccard", "unknown reward 'jaccard'"),
        ("module.only", "unknown reward"),
    ],
)
def test_bad_reward_specs(spec: str, message: str) -> None:
    with pytest.raises(RewardError, match=message):
        load_reward(spec)


def test_bad_builtin_config_names_the_key() -> None:
    with pytest.raises(RewardError, match="window_size"):
        load_reward("nuanced", {"window_size": 0})
    with pytest.raises(RewardError, match="length_penalti"):
        load_reward("hard", {"length_penalti": 0.1})


@pytest.mark.parametrize(
    ("plugin", "message"),
    [
        ("RaisingReward", "ZeroDivisionError"),
        ("NaNReward", "non-finite"),
        ("NaNComponentReward", "non-finite"),
        ("WrongCountReward", "returned 1 totals"),
        ("NotScoredItems", "list of ScoredItem"),
    ],
)
def test_bad_plugin_results_are_errors_and_state_does_not_advance(plugin: str, message: str) -> None:
    client = RewardClient.in_process(load_reward(f"{PLUGINS}:{plugin}"))
    client.load_state_dict(
        {"states": {plugin_name(plugin): {"batches": 3}}, "batches_scored": 3, "last": None}
    )
    before = json.dumps(client.state_dict())
    with pytest.raises(RewardError, match=message):
        client.score("batch-4", items(["Edema"], ["Cardiomegaly"]))
    assert json.dumps(client.state_dict()) == before


def plugin_name(plugin: str) -> str:
    return load_reward(f"{PLUGINS}:{plugin}").name


def test_failed_batch_is_not_recorded_then_retry_succeeds() -> None:
    client = RewardClient.in_process(load_reward(f"{PLUGINS}:LabelCountReward"))
    client.score("b1", items(["Edema"]))
    with pytest.raises(RewardError, match="asked to fail"):
        client.score("b2", items(["Edema"], fail=True))
    assert client.batches_scored == 1 and client.states["label-count"] == {"batches": 1}
    result = client.score("b2", items(["Edema", "Cardiomegaly"]))
    assert result.totals == [2.0] and client.states["label-count"] == {"batches": 2}


def test_state_is_carried_and_checkpointed() -> None:
    config = {"window_size": 4}
    batches = [items(["No Finding"], ["No Finding"]) for _ in range(4)]
    straight = RewardClient.in_process(NuancedReward(config))
    straight_totals = [straight.score(f"b{i}", batch).totals for i, batch in enumerate(batches)]

    first = RewardClient.in_process(NuancedReward(config))
    resumed_totals = [first.score(f"b{i}", batch).totals for i, batch in enumerate(batches[:2])]
    checkpoint = json.loads(json.dumps(first.state_dict()))  # as the trainer saves it
    second = RewardClient.in_process(NuancedReward(config))
    second.load_state_dict(checkpoint)
    resumed_totals += [second.score(f"b{i}", batch).totals for i, batch in enumerate(batches[2:], start=2)]

    assert resumed_totals == straight_totals
    # Window of 4 slots: No Finding dominates once it holds more than ⌊0.7·4⌋ = 2 of them. The 3rd
    # prediction is one excess repetition: 100 - 30 - 50 = 20; from the 4th on, two: 100 - 60 - 50.
    assert straight_totals[1] == [20.0, -10.0] and straight_totals[3] == [-10.0, -10.0]
    assert second.batches_scored == 4


def test_rescoring_the_last_batch_returns_it_without_advancing() -> None:
    client = RewardClient.in_process(load_reward(f"{PLUGINS}:LabelCountReward"))
    first = client.score("b1", items(["Edema"]))
    again = client.score("b1", items(["Edema"]))
    assert again == first and client.batches_scored == 1 and client.states["label-count"] == {"batches": 1}
    with pytest.raises(RewardError, match="already scored with different items"):
        client.score("b1", items(["Cardiomegaly"]))


def test_states_are_kept_per_reward() -> None:
    client = RewardClient.in_process(NuancedReward())
    client.score("b1", items(["Edema"]))
    client.backend.reward = load_reward("hard")  # as a swap does
    client.score("b2", items(["Edema"]))
    assert client.states["hard"] is None and client.states["nuanced"]["window"] == ["Edema"]


def test_bad_checkpoint_is_a_clear_error() -> None:
    with pytest.raises(RewardError, match="not a RewardClient state dict"):
        RewardClient.in_process(NuancedReward()).load_state_dict({"window": []})


def test_plugin_without_predicted_labels_gets_them_parsed() -> None:
    request = RewardRequest(batch_id="b", items=items(["Edema"]))
    result = score_request(load_reward(f"{PLUGINS}:LabelCountReward"), request)
    assert result.label_counts["Edema"].tp == 1 and result.reward_name == "label-count"
