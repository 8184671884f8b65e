"""Metric values the CLI and the API record alike: NaN and ±inf, text, deltas, repeated keys.

NaN and ±inf never block an upload (a diverged run must still save its checkpoint). JSON has no
such numbers, so ``metrics.log``, the tag's metadata and ``--json`` hold them as the strings
"nan", "inf" and "-inf", and reading turns them back into floats.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from helpers import ModelRepo, run_cpv

from cp_manage.artifacts import METADATA_MARKER, metric_delta

DIVERGED = {"loss": float("nan"), "grad_norm": float("inf"), "margin": float("-inf"),
            "accuracy": 0.5}
STORED = {"accuracy": 0.5, "grad_norm": "inf", "loss": "nan", "margin": "-inf"}


def strict_json(text: str) -> Any:
    """Parse ``text`` as standard JSON: the NaN / Infinity literals Python allows fail."""
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON: {text!r}")

    return json.loads(text, parse_constant=refuse)


def last_log_line(repo: ModelRepo) -> Any:
    return strict_json(repo.git("show", "HEAD:metrics.log").splitlines()[-1])


def tag_metadata(repo: ModelRepo, tag: str) -> Any:
    annotation = repo.git("tag", "-l", "--format=%(contents)", tag)
    line = next(x for x in annotation.splitlines() if x.startswith(METADATA_MARKER))
    return strict_json(line[len(METADATA_MARKER):])


def assert_diverged(metrics: dict[str, Any]) -> None:
    assert math.isnan(metrics["loss"])
    assert metrics["grad_norm"] == math.inf and metrics["margin"] == -math.inf
    assert metrics["accuracy"] == 0.5


def test_api_records_nan_and_inf_and_reads_them_back_as_floats(repo: ModelRepo) -> None:
    repo.write_model(seed=1)
    result = repo.manager.upload(metrics=DIVERGED)
    assert result.changed
    assert last_log_line(repo) == STORED
    assert repo.manager.tag_model_checkpoint() == "v0.1"
    assert tag_metadata(repo, "v0.1")["metrics"] == STORED
    for tag in ("v0.1", None):  # from the tag, and from HEAD's metrics.log
        metadata = repo.manager.get_model_metadata(tag)
        assert_diverged(metadata["metrics"])
    # The same weights and the same NaN again: nothing new to record (nan != nan must not
    # make every upload a change).
    again = repo.manager.upload(metrics=DIVERGED)
    assert not again.changed and again.commit == result.commit


def test_cli_records_them_as_the_api_does_and_shows_them(repo: ModelRepo) -> None:
    repo.write_model(seed=1)
    repo.manager.upload(metrics=DIVERGED)
    from_api = repo.git("show", "HEAD:metrics.log").splitlines()[-1]
    repo.write_model(seed=2)
    run_cpv("model", "upload", "--metric", "loss=nan", "--metric", "grad_norm=inf",
            "--metric", "margin=-inf", "--metric", "accuracy=0.5", cwd=repo.root)
    assert repo.git("show", "HEAD:metrics.log").splitlines()[-1] == from_api
    run_cpv("model", "tag", cwd=repo.root)

    shown = strict_json(run_cpv("model", "show", "v0.1", "--json", cwd=repo.root).stdout)
    assert shown["metrics"] == STORED
    listed = strict_json(run_cpv("model", "list", "--json", cwd=repo.root).stdout)
    assert listed[0]["metrics"] == STORED
    text = run_cpv("model", "show", "v0.1", cwd=repo.root).stdout
    assert "grad_norm=inf" in text and "loss=nan" in text and "margin=-inf" in text
    assert_diverged(repo.manager.get_model_metadata("v0.1")["metrics"])


def test_deltas_skip_nan_and_are_rounded(repo: ModelRepo) -> None:
    repo.write_model(seed=1)
    repo.manager.upload(metrics={"accuracy": 0.81, "loss": float("nan"), "steps": 100,
                                 "wer": 0.3})
    repo.manager.tag()
    repo.write_model(seed=2)
    repo.manager.upload(metrics={"accuracy": 0.83, "loss": 0.25, "steps": 300, "wer": 0.1})
    repo.manager.tag()

    rows = repo.manager.diff("v0.1", "v0.2")["metrics"]
    assert rows["accuracy"]["delta"] == 0.02 and repr(rows["accuracy"]["delta"]) == "0.02"
    assert repr(rows["wer"]["delta"]) == "-0.2"  # not 0.1 - 0.3 == -0.19999999999999998
    assert rows["steps"]["delta"] == 200 and isinstance(rows["steps"]["delta"], int)
    assert rows["loss"]["delta"] is None and math.isnan(rows["loss"]["old"])

    as_json = strict_json(run_cpv("model", "diff", "v0.1", "v0.2", "--json",
                                  cwd=repo.root).stdout)
    assert as_json["metrics"]["accuracy"]["delta"] == 0.02
    assert as_json["metrics"]["loss"] == {"old": "nan", "new": 0.25, "delta": None}
    table = run_cpv("model", "diff", "v0.1", "v0.2", cwd=repo.root).stdout.splitlines()
    assert next(x for x in table if x.startswith("accuracy")).split() == [
        "accuracy", "0.81", "0.83", "+0.02"]
    assert next(x for x in table if x.startswith("loss")).split() == ["loss", "nan", "0.25", "-"]


@pytest.mark.parametrize(("old", "new", "delta"), [
    (0.81, 0.83, 0.02), (0.3, 0.1, -0.2), (1e-05, 3e-05, 2e-05), (1, 3, 2), (0.5, 2, 1.5),
    (float("nan"), 1.0, None), (1.0, float("inf"), None), (True, 2, None), ("0,81", 0.9, None),
])
def test_metric_delta(old: Any, new: Any, delta: Any) -> None:
    assert metric_delta(old, new) == delta


def test_cli_keeps_a_value_that_is_not_a_number_as_text_and_warns(repo: ModelRepo) -> None:
    repo.write_model(seed=1)
    result = run_cpv("model", "upload", "--metric", "accuracy=0,81", "--metric", "wer=0.2",
                     cwd=repo.root)
    assert "warning: metric accuracy: '0,81' is not a number" in result.stderr
    assert "0.81" in result.stderr  # what the user probably meant
    assert "wer" not in result.stderr
    assert last_log_line(repo) == {"accuracy": "0,81", "wer": 0.2}


def test_a_metric_given_twice_is_a_usage_error(repo: ModelRepo) -> None:
    repo.write_model(seed=1)
    before = repo.snapshot()
    twice = run_cpv("model", "upload", "--metric", "loss=0.1", "--metric", "loss=0.2",
                    cwd=repo.root, expect=2)
    assert "'loss' is given twice" in twice.stderr
    metrics_file = repo.root.parent / "metrics.json"
    metrics_file.write_text('{"loss": 0.1}')
    both = run_cpv("model", "upload", "--metrics-file", metrics_file, "--metric", "loss=0.2",
                   cwd=repo.root, expect=2)
    assert "'loss'" in both.stderr and "metrics.json" in both.stderr
    assert repo.snapshot() == before
