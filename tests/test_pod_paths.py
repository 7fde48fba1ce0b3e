"""What a pod can reach: paths re-rooted at the PVC mount, Katib's sh -c, metric times.

Each test here failed before its fix (issue 10, findings 1, 3, 4 and 5): the real API
server and pod's-eye versions of the same checks are in ``tests/cluster``.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from automl_deft.errors import UserError
from automl_deft.hpo import katib_backend
from automl_deft.hpo import katib_manifest as km
from automl_deft.hpo.base import Budget
from automl_deft.hpo.katib_backend import KatibBackend, KatibLauncher, dry_run_experiment
from automl_deft.hpo.search import AutomlConfig
from automl_deft.hpo.space import Param, SearchSpace, default_aoi_space
from automl_deft.hpo.trial import (
    SearchProblem,
    _print_metrics,
    metric_timestamp,
    param_env,
    trial_values,
)
from automl_deft.model.spec import Spec
from automl_deft.mount import WorkspaceMount
from automl_deft.testing.fake_kubernetes import FakeCluster

KATIB_METRIC_REGEX = re.compile(r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)")
"""Katib's default StdOut collector filter."""


def _problem(ws: Path, results: Path, **kwargs: Any) -> SearchProblem:
    space = SearchSpace(
        (Param(name="lr", key="train.optim.lr", type="float", low=1e-4, high=1e-2),)
    )
    return SearchProblem.create(ws, space, Spec(), results, **kwargs)


# --- finding 1: paths handed to pods ----------------------------------------------------


def test_mount_re_roots_workspace_paths_and_refuses_the_rest(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    (ws / "results").mkdir(parents=True)
    mount = WorkspaceMount.of(ws)
    assert mount.to_pod(ws / "results" / "a.json", what="x") == "/workspace/results/a.json"
    assert mount.to_pod(ws, what="x") == "/workspace"
    inside_pod = WorkspaceMount.of("/workspace")
    assert inside_pod.to_pod("/workspace/results", what="x") == "/workspace/results"
    with pytest.raises(UserError, match=r"^the CSV /etc/x\.csv is outside the workspace .*ws: "):
        mount.to_pod("/etc/x.csv", what="the CSV")
    (tmp_path / "elsewhere").mkdir()
    (ws / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UserError, match=r"outside the workspace"):
        mount.to_pod(ws / "link" / "a.csv", what="the CSV")
    with pytest.raises(UserError, match=r"is relative"):
        mount.to_pod("results/a.csv", what="the CSV")
    with pytest.raises(UserError, match=r"must be an absolute path"):
        WorkspaceMount.of(ws, "workspace")


def test_problem_for_pods_re_roots_every_path_it_holds(tiny_ws: Path) -> None:
    results = tiny_ws / "results" / "x"
    warm = tiny_ws / "results" / "warm.pt"
    problem = _problem(tiny_ws, results, warm_start=warm)
    spec_paths = problem.base_spec | {
        "model": problem.base_spec["model"]
        | {
            "backbone": problem.base_spec["model"]["backbone"]
            | {"pretrained_backbone_path": str(tiny_ws / "weights" / "b.pt")}
        }
    }
    pod = SearchProblem(**{**problem.__dict__, "base_spec": spec_paths}).for_pods(
        WorkspaceMount.of(tiny_ws, "/mnt/ws")
    )
    assert pod.workspace == "/mnt/ws"
    assert pod.results_dir == "/mnt/ws/results/x"
    assert pod.train_csv == "/mnt/ws/" + Path(problem.train_csv).relative_to(tiny_ws).as_posix()
    assert pod.val_csv.startswith("/mnt/ws/")
    assert pod.warm_start == "/mnt/ws/results/warm.pt"
    assert pod.base_spec["model"]["backbone"]["pretrained_backbone_path"] == "/mnt/ws/weights/b.pt"
    # nothing else changed
    assert pod.params == problem.params and pod.pinned == problem.pinned


def test_katib_search_refuses_a_path_outside_the_mount_before_anything_is_sent(
    tiny_ws: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster()
    backend = KatibBackend(api_factory=cluster.client)
    outside = _problem(tiny_ws, tmp_path / "results")
    with pytest.raises(UserError, match=r"^the results directory .* is outside the workspace"):
        backend.search(outside, Budget(max_trials=2))
    assert cluster.calls == []
    assert not (tmp_path / "results").exists(), "nothing written"


def test_dry_run_trial_command_paths_all_start_with_the_mount_path(tiny_ws_copy: Path) -> None:
    text = dry_run_experiment(
        tiny_ws_copy,
        AutomlConfig(backend="katib", max_trials=2, katib={"mount_path": "/data/ws"}),
        results_dir=tiny_ws_copy / "results" / "dry",
    )
    exp = yaml.safe_load(text)
    container = exp["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][
        0
    ]
    paths = [w for w in container["command"] if "/" in w]
    assert paths == ["/data/ws/results/dry/search_problem.json"]
    assert container["volumeMounts"][0]["mountPath"] == "/data/ws"
    assert str(tiny_ws_copy) not in text, "no path of the submitting machine in the Experiment"
    assert not (tiny_ws_copy / "results/dry").exists(), "a dry run writes nothing"


# --- finding 4: Katib's unquoted sh -c -------------------------------------------------


def test_sampled_values_reach_the_trial_through_env_vars_not_the_shell() -> None:
    space = SearchSpace(
        (
            Param(name="lr", key="train.optim.lr", type="float", low=1e-4, high=1e-2),
            Param(
                name="backbone",
                key="model.backbone.type",
                type="categorical",
                choices=("cnn_small", "efficientnet_lite0"),
            ),
        )
    )
    exp = km.build_experiment(
        "e", space, km.KatibSettings(), problem_path="/workspace/results/p.json"
    )
    container = exp["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][
        0
    ]
    # Katib joins command and args with spaces under sh -c: every word must survive that,
    # and nothing in the command is substituted by Katib.
    joined = " ".join(container["command"])
    assert shlex.split(joined) == container["command"]
    assert "${" not in joined
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "AUTOML_DEFT_TRIAL_NAME": "${trialParameters.trialName}",
        "AUTOML_DEFT_PARAM_LR": "${trialParameters.lr}",
        "AUTOML_DEFT_PARAM_BACKBONE": "${trialParameters.backbone}",
    }
    # A value with a space and shell metacharacters arrives whole.
    odd = SearchSpace(
        (Param(name="tag", key="train.optim.optim", type="categorical", choices=("a b; $(x)",)),)
    )
    assert trial_values(odd, [], {param_env("tag"): "a b; $(x)"}) == {"tag": "a b; $(x)"}
    assert trial_values(space, ["lr=0.002"], {param_env("lr"): "0.005"})["lr"] == 0.002


def test_a_problem_path_a_shell_would_split_is_refused() -> None:
    with pytest.raises(UserError, match=r"has a space or a shell metacharacter"):
        km.trial_job(
            SearchSpace(()), km.KatibSettings(), problem_path="/workspace/my results/p.json"
        )
    with pytest.raises(UserError, match=r"not under the trials' mount path /workspace"):
        km.trial_job(SearchSpace(()), km.KatibSettings(), problem_path="/tmp/ws/p.json")
    with pytest.raises(UserError, match=r"katib\.mount_path '/my ws' has a space"):
        km.KatibSettings(mount_path="/my ws")


# --- finding 3: metric lines carry their time -------------------------------------------


def test_metric_lines_carry_an_increasing_rfc3339_time_and_parse_with_katibs_regex(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _print_metrics(1, {"far_pct": 12.5, "val_loss": 0.25})
    _print_metrics(2, {"far_pct": 3.0, "val_loss": float("nan")})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    stamps = []
    for line in lines:
        stamp, rest = line.split(" ", 1)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", stamp), stamp
        stamps.append(datetime.fromisoformat(stamp[:26] + "+00:00"))
        found = {m[0]: float(m[1]) for m in KATIB_METRIC_REGEX.findall(rest)}
        assert set(found) <= {"far_pct", "val_loss"} and found
        assert not KATIB_METRIC_REGEX.findall(stamp), "the time itself is not a metric"
    assert [line.split(" ", 1)[1] for line in lines] == [
        "far_pct=12.5",
        "val_loss=0.25",
        "far_pct=3.0",
    ]
    assert stamps == sorted(stamps)
    raw = [line.split(" ", 1)[0] for line in lines]
    assert len(set(raw)) == len(raw), "strictly increasing: Katib orders by time"
    assert metric_timestamp() > raw[-1]


def test_trial_entry_point_reads_its_values_from_the_env(tmp_path: Path) -> None:
    """``python -m automl_deft.hpo.trial --help`` names the env var the values come in."""
    out = subprocess.run(
        [sys.executable, "-m", "automl_deft.hpo.trial", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "AUTOML_DEFT_PARAM_<NAME>" in out


# --- finding 5: namespace, and no state file after a refused create ---------------------


def test_a_bad_namespace_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^katib\.namespace 'Team_AOI': use at most 63 lower"):
        km.KatibSettings(namespace="Team_AOI")


@pytest.mark.parametrize("status", [400, 403, 404, 422])
def test_a_refused_create_leaves_no_state_file(tmp_path: Path, status: int) -> None:
    """A create the server refuses (not 409) created nothing: a re-run must not try to
    resume it ("no longer exists; delete that file")."""
    cluster = FakeCluster()
    cluster.fail_next(status=status, methods=["create"])
    launcher = KatibLauncher(
        default_aoi_space(),
        km.KatibSettings(),
        results_dir=tmp_path,
        problem_path="/workspace/results/p.json",
        api_factory=cluster.client,
        sleep=lambda s: None,
    )
    with pytest.raises(UserError):
        launcher.run(60)
    assert not (tmp_path / katib_backend.STATE_FILE).exists()
    # the re-run creates afresh (and would go on to poll it)
    cluster.on("create", lambda c, call: (_ for _ in ()).throw(_Created()))
    with pytest.raises(_Created):
        launcher.run(60)


class _Created(Exception):
    """The second run reached create (instead of failing on a stale state file)."""
