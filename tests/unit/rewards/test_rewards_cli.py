"""`cxr-rl parse` and `cxr-rl reward` on JSONL streams, in process."""

import io
import json

import pytest

from cxr_rl.cli import main


def run(monkeypatch, capsys, argv: list[str], lines: list[str]) -> tuple[int, list[dict], str]:
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(line + "\n" for line in lines)))
    code = main(argv)
    captured = capsys.readouterr()
    return code, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_parse_command(monkeypatch, capsys) -> None:
    lines = [
        json.dumps({"text": "<think>x</think><solution>Edema, PTX, edema, Banana</solution>"}),
        "",
        json.dumps({"text": "Final answer: possible pneumonia"}),
    ]
    code, out, _ = run(monkeypatch, capsys, ["parse"], lines)
    assert code == 0 and len(out) == 2
    assert out[0]["valid"] and out[0]["labels"] == ["Edema", "Pneumothorax"]
    assert out[0]["invalid"] == ["Banana"] and out[0]["duplicates"] == ["Edema"]
    assert not out[1]["valid"] and out[1]["labels"] == []
    code, out, _ = run(monkeypatch, capsys, ["parse", "--mode", "lenient"], lines[2:])
    assert out[0]["labels"] == ["Pneumonia"]


def test_parse_command_nv_reason_tags(monkeypatch, capsys) -> None:
    line = json.dumps({"text": "<think>x</think><answer>Edema</answer>"})
    _, out, _ = run(monkeypatch, capsys, ["parse", "--tags", "nv-reason"], [line])
    assert out[0]["valid"] and out[0]["labels"] == ["Edema"]


def test_reward_command_carries_the_window(monkeypatch, capsys, tmp_path) -> None:
    config = tmp_path / "nuanced.yaml"
    config.write_text("window_size: 3\n")
    line = json.dumps(
        {"text": "<think>x</think><solution>No Finding</solution>", "labels": ["No Finding"], "n_tokens": 5}
    )
    code, out, _ = run(
        monkeypatch, capsys, ["reward", "--name", "nuanced", "--config", str(config)], [line] * 3
    )
    # Window of 3: No Finding dominates beyond ⌊0.7·3⌋ = 2 slots. Lines 1-2: exact match 100;
    # line 3 is one excess repetition: 100 - 30 - 50 = 20.
    assert code == 0 and [record["reward"] for record in out] == [100.0, 100.0, 20.0]
    assert out[2]["components"]["collapse"] == -50.0


def test_hard_reward_command(monkeypatch, capsys) -> None:
    line = json.dumps(
        {"text": "<think>x</think><solution>Edema</solution>", "labels": ["Edema"], "n_tokens": 10}
    )
    code, out, _ = run(monkeypatch, capsys, ["reward", "--name", "hard"], [line])
    assert code == 0 and out == [
        {"reward": 0.9, "components": {"jaccard": 1.0, "length_penalty": -0.1, "format": 0.0}}
    ]


@pytest.mark.parametrize(
    ("argv", "lines", "message"),
    [
        (["parse"], ['{"text": "ok"}', "{not json"], "stdin line 2: not valid JSON"),
        (["parse"], ['{"text": 3}'], "stdin line 1: field 'text' must be a string"),
        (
            ["reward", "--name", "hard"],
            ['{"text": "x", "labels": ["Edema"]}'],
            "stdin line 1: n_tokens: Field required",
        ),
        (
            ["reward", "--name", "hard"],
            ['{"text": "x", "labels": ["Banana"], "n_tokens": 1}'],
            "stdin line 1: (top level): Value error, unknown ground-truth label",
        ),
        (["reward", "--name", "hard"], ["[1, 2]"], "stdin line 1: expected a JSON object"),
        (["reward", "--name", "nowhere.module:Reward"], [], "cannot import reward plugin"),
        (["reward"], [], "give --name"),
        (
            ["reward", "--name", "nuanced", "--config", "/nonexistent/reward.yaml"],
            [],
            "reward config file not found",
        ),
    ],
)
def test_bad_input_is_one_clear_line(monkeypatch, capsys, argv, lines, message) -> None:
    code, _, err = run(monkeypatch, capsys, argv, lines)
    assert code == 1
    assert err.count("\n") == 1 and message in err, err


def test_lines_before_a_bad_line_are_written(monkeypatch, capsys) -> None:
    good = json.dumps(
        {"text": "<think>x</think><solution>Edema</solution>", "labels": ["Edema"], "n_tokens": 300}
    )
    code, out, err = run(monkeypatch, capsys, ["reward", "--name", "hard"], [good, "oops"])
    assert code == 1 and out == [
        {"reward": 1.0, "components": {"jaccard": 1.0, "length_penalty": 0.0, "format": 0.0}}
    ]
    assert "stdin line 2" in err


def test_swap_without_a_cluster_is_a_clear_error(capsys) -> None:
    assert main(["reward", "swap", "--name", "nuanced", "--address", "127.0.0.1:1"]) == 1
    assert "no running Ray cluster at '127.0.0.1:1'" in capsys.readouterr().err


def test_help_lists_the_actions(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["reward", "--help"])
    help_text = capsys.readouterr().out
    assert "serve" in help_text and "swap" in help_text and "--name" in help_text
