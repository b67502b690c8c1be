"""Evaluation: metrics over label sets, bootstrap intervals, shortcut baselines, checkpoint selection
and reports laid out like the paper's Tables 5 and 6. Everything here is pure (no server): a runner
that queries the rollout server writes `PredictionRecord`s, and these modules score them."""
