"""The run summary warns when the scores it shows come from answers that could not be parsed."""

from deploy.run_summary import unparseable_warning


def point(step: int, fail_rate: float) -> dict:
    return {"step": step, "id_macro_f1": 0.0, "id_fail_rate": fail_rate}


def test_warns_on_the_latest_step_when_most_answers_broke_the_format():
    warning = unparseable_warning([point(4, 1.0), point(0, 0.0)])
    assert warning is not None and "100%" in warning and "step 4" in warning


def test_silent_when_the_latest_step_parses():
    assert unparseable_warning([point(0, 1.0), point(4, 0.25)]) is None
