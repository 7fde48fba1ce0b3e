"""Run a component (or a Katib trial) the way a pod runs it: the "pod's-eye" harness.

A pod sees its image's file system, the volumes mounted into it and nothing of the
machine that submitted the run. :func:`run_in_pod` gives a command that view on
this machine, as root, in a private mount namespace (util-linux ``unshare``):

- a fresh root (a tmpfs) holding this machine's top-level folders (the "image": the
  repository and its ``.venv`` stay where they are, as ``/opt/automl-deft`` is in
  the real image), a fresh, empty ``/tmp``, and ``HOME``/``TMPDIR`` in it;
- the workspace folder bound at the PVC's mount path (``/workspace``), and the
  other volumes (:class:`Bind`) at theirs;
- the workspace's own path on this machine hidden (under ``/tmp`` it is gone with
  the fresh ``/tmp``; elsewhere an empty tmpfs covers its parent folder), so a path
  computed on the submitting machine fails inside exactly as it would in a pod.

:class:`PodDriver` plays the KFP driver and launcher for a compiled pipeline's IR:
it walks the root DAG in topological order, nested DAGs (``dsl.If``/``dsl.Else``,
``dsl.OneOf``) included, evaluates each trigger condition on upstream outputs,
builds every container task's executor input (parameter values; artifact URIs under
the ``minio://`` pipeline root, which the KFP executor maps to ``/minio/…``, bound
to a folder here), runs ``deploymentSpec.executors.<exec>.container`` as given (the
``{{$}}`` placeholder and the others resolved by ``kfp.local``'s resolver) and reads
the task's outputs back from its executor output file.

No container command pip-installs anything: the components are built with
``install_kfp_package=False`` and no ``packages_to_install`` (``components.build``),
so a pod runs the image's (here: this ``.venv``'s) ``python3`` with kfp and the
library preinstalled. :class:`PodDriver` refuses a command that would.

The Katib helpers at the end play Katib's controller and StdOut metrics collector
for one trial: :func:`katib_trial_container` substitutes ``${trialParameters.*}``
in the trial template, :func:`stdout_collector_command` wraps the command the way
the collector does (``sh -c "… 1>/var/log/katib/metrics.log 2>&1 && …"``) and
:func:`katib_metrics` reads the log with Katib's default regex.
"""

from __future__ import annotations

import ast
import graphlib
import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import automl_deft

WORKSPACE_MOUNT = "/workspace"
"""Where the workspace PVC is mounted in every pod unless the IR says otherwise."""
PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"
"""KFP's default pipeline root on a cluster; the executor maps it to ``/minio/…``."""
OUTPUTS_DIR = "/tmp/kfp_outputs"
"""Where a task writes its executor output inside the pod (pod-local, like the launcher's)."""
EXECUTOR_OUTPUT = "output_metadata.json"
KATIB_LOG_DIR = "/var/log/katib"
"""Katib's StdOut collector: the trial's output goes to ``metrics.log`` here."""
KATIB_METRICS_LOG = f"{KATIB_LOG_DIR}/metrics.log"
KATIB_METRIC_REGEX = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
"""Katib's default ``metricsFormat`` for the StdOut/File collectors (TEXT format)."""
RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
TASK_TIMEOUT_S = 1200.0
UNSHARE = "/usr/bin/unshare"
CHROOT = "/usr/sbin/chroot"
_RBIND = frozenset({"dev", "proc", "sys"})
"""Top-level folders bound with their submounts (``/dev/shm`` for DataLoader workers)."""
IMAGE_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
_SKIP = frozenset({"tmp", "lost+found"})


class PodError(RuntimeError):
    """A pod's-eye run could not be set up, or a task in it failed."""


# --- the sandbox -------------------------------------------------------------------------


@dataclass(frozen=True)
class Bind:
    """A folder on this machine mounted at ``pod_path`` in the pod (a volume)."""

    pod_path: str
    host_path: Path


@dataclass(frozen=True)
class PodResult:
    """What a pod's command did: its exit status and its output (stdout and stderr)."""

    returncode: int
    output: str
    seconds: float

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def pod_support() -> str | None:
    """Why pods cannot be run here (one line), or None when they can."""
    if os.name != "posix" or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "pod's-eye tests need root (a private mount namespace with unshare --mount)"
    for tool in (UNSHARE, CHROOT):
        if not os.access(tool, os.X_OK):
            return f"pod's-eye tests need {tool} (util-linux / coreutils)"
    probe = subprocess.run(
        [UNSHARE, "--mount", "--propagation", "private", "/bin/sh", "-c", "mount -t tmpfs x /mnt"],
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["no reason given"])[-1]
        return f"unshare cannot create a private mount namespace here: {reason}"
    return None


def image_roots() -> tuple[Path, ...]:
    """What the image holds that a pod needs: the library's source tree and its Python."""
    return (Path(automl_deft.__file__).resolve().parent.parent, Path(sys.prefix).resolve())


def pod_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A pod's environment: the image's ``PATH`` (this Python first), nothing of the
    caller's environment, ``HOME`` and ``TMPDIR`` in the pod's fresh ``/tmp``."""
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), *IMAGE_PATH]),
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.update(extra or {})
    return env


def run_in_pod(
    command: Sequence[str],
    workspace_host_dir: str | os.PathLike[str],
    mount_path: str = WORKSPACE_MOUNT,
    *,
    binds: Iterable[Bind] = (),
    env: Mapping[str, str] | None = None,
    cwd: str = "/",
    timeout_s: float | None = None,
    log_path: str | os.PathLike[str] | None = None,
) -> PodResult:
    """Run ``command`` as a pod would, with the workspace only at ``mount_path``.

    Args:
        command: the container's argv (resolved inside the pod: ``python3`` is the
            image's).
        workspace_host_dir: the workspace on this machine (the PVC's contents); it
            must not be inside the repository or its virtual environment.
        mount_path: where the pod mounts the workspace.
        binds: other volumes (the artifact store, Katib's log folder, …).
        env: the container's environment (on top of :func:`pod_env`).
        cwd: the container's working directory.
        timeout_s: kill the pod (its whole process group) after this long.
        log_path: also write the pod's output there.

    Raises:
        PodError: the sandbox cannot be set up (a folder that does not exist, a
            workspace inside the repository, …), or the command timed out.
    """
    ws = Path(workspace_host_dir).resolve()
    if not ws.is_dir():
        raise PodError(f"workspace {ws} is not a folder")
    volumes = [Bind(mount_path, ws), *binds]
    for volume in volumes:
        if not PurePosixPath(volume.pod_path).is_absolute():
            raise PodError(f"mount path {volume.pod_path!r} is not absolute")
        if not Path(volume.host_path).is_dir():
            raise PodError(f"volume {volume.host_path} (for {volume.pod_path}) is not a folder")
    root = Path(tempfile.mkdtemp(prefix="pod-root-"))
    script = _setup_script(root, volumes, cwd)
    start = time.monotonic()
    try:
        with tempfile.TemporaryFile() as out:
            namespace = [UNSHARE, "--mount", "--propagation", "private"]
            proc = subprocess.Popen(
                [*namespace, "/bin/sh", "-c", script, "pod", *command],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=pod_env(env),
                start_new_session=True,
            )
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise PodError(f"{command[0]}: still running after {timeout_s:.0f} s") from None
            out.seek(0)
            text = out.read().decode("utf-8", errors="replace")
    finally:
        root.rmdir()  # the tmpfs on it lived in the namespace only: it is empty here
    if log_path is not None:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        Path(log_path).write_text(text, encoding="utf-8")
    return PodResult(rc, text, time.monotonic() - start)


def _setup_script(root: Path, volumes: Sequence[Bind], cwd: str) -> str:
    """The shell that builds the pod's root in the new namespace and ``chroot``s into it."""
    q = shlex.quote
    r = str(root)
    targets = {PurePosixPath(v.pod_path) for v in volumes}
    lines = ["set -eu", f"mount -t tmpfs -o mode=0755 pod-root {q(r)}"]
    image: set[str] = set()
    for entry in sorted(os.listdir("/")):
        path = Path("/") / entry
        if entry in _SKIP or PurePosixPath("/", entry) in targets:
            continue
        if path.is_symlink():
            lines.append(f"ln -s {q(os.readlink(path))} {q(f'{r}/{entry}')}")
        elif path.is_dir():
            kind = "--rbind" if entry in _RBIND else "--bind"
            into = q(f"{r}/{entry}")
            lines += [f"mkdir {into}", f"mount {kind} {q(str(path))} {into}"]
            image.add(entry)
    lines.append(f"mkdir {q(f'{r}/tmp')} && mount -t tmpfs -o mode=1777 pod-tmp {q(f'{r}/tmp')}")
    # A checkout (or its venv) under /tmp is part of the "image": put it back into the
    # fresh /tmp at its own path (the outermost folder only: a venv inside the checkout
    # comes with it).
    roots = sorted(image_roots(), key=lambda p: len(p.parts))
    kept: list[Path] = []
    for keep in roots:
        if keep.is_relative_to("/tmp") and not any(keep.is_relative_to(k) for k in kept):
            kept.append(keep)
            lines += [
                f"mkdir -p {q(r + str(keep))}",
                f"mount --bind {q(str(keep))} {q(r + str(keep))}",
            ]
    covered: set[PurePosixPath] = set()
    for volume in sorted(volumes, key=lambda v: len(PurePosixPath(v.pod_path).parts)):
        target = PurePosixPath(volume.pod_path)
        if target.parts[1] in image and not Path(target).is_dir():
            # A mount point the image lacks, under one of its folders: the nearest
            # existing folder is replaced by an empty one (nothing is created here).
            holder = next(p for p in target.parents if Path(p).is_dir())
            keeps = any(Path(keep).is_relative_to(holder) for keep in image_roots())
            if holder == PurePosixPath("/") or holder.parts[1] in _RBIND or keeps:
                raise PodError(
                    f"a volume at {target} would cover {holder} of the image: choose another path"
                )
            if holder not in covered:
                lines.append(f"mount -t tmpfs pod-empty {q(r + str(holder))}")
                covered.add(holder)
        lines += [
            f"mkdir -p {q(r + str(target))}",
            f"mount --bind {q(str(Path(volume.host_path).resolve()))} {q(r + str(target))}",
        ]
    for hidden in _hidden(volumes):
        lines.append(f"mount -t tmpfs pod-hidden {q(r + str(hidden))}")
    lines.append(f'exec {CHROOT} {q(r)} /bin/sh -c \'cd "$0" && exec "$@"\' {q(cwd)} "$@"')
    return "\n".join(lines)


def _hidden(volumes: Sequence[Bind]) -> list[PurePosixPath]:
    """The folders to cover so no volume's path on this machine exists in the pod."""
    roots = image_roots()
    out: list[PurePosixPath] = []
    for volume in volumes:
        host = Path(volume.host_path).resolve()
        for keep in roots:
            if host == keep or keep in host.parents or host in keep.parents:
                raise PodError(
                    f"volume {host} overlaps the image ({keep}): put it outside the repository"
                )
        if host.is_relative_to("/tmp"):
            continue  # gone with the pod's fresh /tmp
        parent = host.parent
        if parent == Path("/"):
            raise PodError(f"volume {host} sits at the top of the file system: nothing to hide")
        if any(keep.is_relative_to(parent) for keep in roots):
            raise PodError(
                f"hiding {parent} (the parent of volume {host}) would hide the image; "
                "put the volume in another folder"
            )
        out.append(PurePosixPath(parent))
    return sorted(set(out), key=lambda p: len(p.parts))


# --- the driver --------------------------------------------------------------------------


@dataclass
class RuntimeArtifact:
    """An artifact as the driver passes it on: its URI, metadata and type."""

    name: str
    uri: str
    metadata: dict[str, Any] = field(default_factory=dict)
    schema_title: str = "system.Artifact"
    schema_version: str = "0.0.1"

    def message(self) -> dict[str, Any]:
        """The artifact in an executor input (``inputs/outputs.artifacts.<name>.artifacts[0]``)."""
        return {
            "name": self.name,
            "uri": self.uri,
            "metadata": self.metadata,
            "type": {"schemaTitle": self.schema_title, "schemaVersion": self.schema_version},
        }

    @property
    def pod_path(self) -> str:
        """Where the KFP executor reads and writes it inside a pod (``/minio/…``)."""
        from kfp import dsl

        path = dsl.Artifact(uri=self.uri).path
        assert path is not None
        return path


@dataclass
class TaskRun:
    """One task of the pipeline as the driver ran (or skipped) it.

    Attributes:
        path: the task's name with its DAGs, e.g. ``condition-branches-4/condition-8/finalize``.
        component: the component it ran (``comp-finalize``).
        skipped: its trigger condition was false (a branch not taken).
        parameters, artifacts: its outputs (a DAG's: those it declares).
        executor_input: what the task was given (container tasks).
        result: the pod's exit status and output (container tasks).
    """

    path: str
    component: str
    skipped: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, RuntimeArtifact] = field(default_factory=dict)
    executor_input: dict[str, Any] | None = None
    result: PodResult | None = None

    @property
    def name(self) -> str:
        return self.path.rpartition("/")[2]


class PodDriver:
    """Chain the tasks of a compiled pipeline, each container task run as a pod.

    Args:
        ir: the pipeline's IR (the first YAML document of ``automl-deft compile``).
        platform: the second document (``platforms.kubernetes``): each executor's
            PVC mount path is read from it (default :data:`WORKSPACE_MOUNT`).
        workspace: the workspace folder on this machine (the PVC).
        store: a folder on this machine that holds the pipeline root's artifacts.
        logs: where each task's output is written (``<task>.log``).
        echo: called with one status line per task.
    """

    def __init__(
        self,
        ir: Mapping[str, Any],
        platform: Mapping[str, Any] | None,
        *,
        workspace: str | os.PathLike[str],
        store: str | os.PathLike[str],
        logs: str | os.PathLike[str],
        pipeline_root: str = PIPELINE_ROOT,
        timeout_s: float = TASK_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.ir = ir
        self.executors = ir["deploymentSpec"]["executors"]
        k8s = (platform or {}).get("platforms", {}).get("kubernetes", {})
        self.platform = k8s.get("deploymentSpec", {}).get("executors", {})
        self.workspace = Path(workspace)
        self.store = Path(store)
        self.logs = Path(logs)
        self.pipeline_root = pipeline_root.rstrip("/")
        self.timeout_s = timeout_s
        self.env = dict(env or {})
        self.echo = echo
        self.run_id = uuid.uuid4().hex[:12]
        self.tasks: dict[str, TaskRun] = {}
        self._roots: set[str] = set()

    @property
    def name(self) -> str:
        return str(self.ir["pipelineInfo"]["name"])

    def host_path(self, artifact: RuntimeArtifact, store: Path | None = None) -> Path:
        """Where ``artifact`` lies on this machine (in :attr:`store`, or in ``store``)."""
        prefix = self.pipeline_root + "/"
        if not artifact.uri.startswith(prefix):
            raise PodError(f"artifact {artifact.uri} is not under the pipeline root {prefix}")
        return (store or self.store) / artifact.uri[len(prefix) :]

    def run(self, arguments: Mapping[str, Any] | None = None) -> dict[str, TaskRun]:
        """Run the whole pipeline with ``arguments`` (the other parameters: defaults).

        Returns:
            Every task by :attr:`TaskRun.path`, in the order they ran.

        Raises:
            PodError: a task failed (its output's last lines are in the message).
            ValueError: an argument the pipeline does not have.
        """
        root = self.ir["root"]
        definitions = root.get("inputDefinitions", {}).get("parameters", {})
        unknown = sorted(set(arguments or {}) - set(definitions))
        if unknown:
            raise ValueError(f"{self.name} has no parameters {unknown}")
        params = {k: v["defaultValue"] for k, v in definitions.items() if "defaultValue" in v}
        params.update(arguments or {})
        self._run_dag(root["dag"], "", params, {})
        return self.tasks

    # --- DAGs

    def _run_dag(
        self,
        dag: Mapping[str, Any],
        scope: str,
        params: Mapping[str, Any],
        artifacts: Mapping[str, RuntimeArtifact],
    ) -> dict[str, TaskRun]:
        tasks: Mapping[str, Any] = dag.get("tasks", {})
        order = graphlib.TopologicalSorter(
            {name: sorted(_upstream(spec)) for name, spec in sorted(tasks.items())}
        )
        done: dict[str, TaskRun] = {}
        for name in order.static_order():
            spec = tasks[name]
            path = f"{scope}/{name}" if scope else name
            in_params, in_artifacts = self._inputs(spec, path, params, artifacts, done)
            component_name = spec["componentRef"]["name"]
            component = self.ir["components"][component_name]
            _add_defaults(component, in_params)
            condition = spec.get("triggerPolicy", {}).get("condition")
            if spec.get("iteratorPolicy") or spec.get("parameterIterator"):
                raise PodError(f"{path}: dsl.ParallelFor is not supported by this driver")
            if condition and not evaluate_condition(condition, in_params):
                run = TaskRun(path, component_name, skipped=True)
                self.echo(f"[pod] {path}: skipped ({condition})")
            elif "dag" in component:
                run = TaskRun(path, component_name)
                inner = self._run_dag(component["dag"], path, in_params, in_artifacts)
                run.parameters, run.artifacts = _dag_outputs(component["dag"], path, inner)
            else:
                run = self._run_container(path, component_name, component, in_params, in_artifacts)
            done[name] = run
            self.tasks[path] = run
        return done

    def _inputs(
        self,
        spec: Mapping[str, Any],
        path: str,
        params: Mapping[str, Any],
        artifacts: Mapping[str, RuntimeArtifact],
        done: Mapping[str, TaskRun],
    ) -> tuple[dict[str, Any], dict[str, RuntimeArtifact]]:
        inputs = spec.get("inputs", {})
        out_params: dict[str, Any] = {}
        for key, source in inputs.get("parameters", {}).items():
            if "componentInputParameter" in source:
                parent = source["componentInputParameter"]
                if parent in params:
                    out_params[key] = params[parent]
            elif "taskOutputParameter" in source:
                ref = source["taskOutputParameter"]
                producer, output = ref["producerTask"], ref["outputParameterKey"]
                out_params[key] = _output(done, path, producer, output)
            elif "runtimeValue" in source:
                out_params[key] = source["runtimeValue"]["constant"]
            else:
                raise PodError(f"{path}: input parameter {key} has an unsupported source {source}")
            if "parameterExpressionSelector" in source:
                raise PodError(f"{path}: {key}: parameterExpressionSelector is not supported")
        out_artifacts: dict[str, RuntimeArtifact] = {}
        for key, source in inputs.get("artifacts", {}).items():
            if "componentInputArtifact" in source:
                parent = source["componentInputArtifact"]
                if parent in artifacts:
                    out_artifacts[key] = artifacts[parent]
            elif "taskOutputArtifact" in source:
                ref = source["taskOutputArtifact"]
                producer = done.get(ref["producerTask"])
                if producer is None or producer.skipped:
                    raise PodError(f"{path}: artifact {key} comes from a task that did not run")
                out_artifacts[key] = producer.artifacts[ref["outputArtifactKey"]]
            else:
                raise PodError(f"{path}: input artifact {key} has an unsupported source {source}")
        return out_params, out_artifacts

    # --- container tasks

    def _run_container(
        self,
        path: str,
        component_name: str,
        component: Mapping[str, Any],
        params: dict[str, Any],
        artifacts: Mapping[str, RuntimeArtifact],
    ) -> TaskRun:
        from kfp.local import placeholder_utils

        name = path.rpartition("/")[2]
        if name in self._roots:
            raise PodError(f"two tasks named {name}: their artifact folders would collide")
        self._roots.add(name)
        label = component["executorLabel"]
        container = self.executors[label]["container"]
        argv = [*container.get("command", []), *container.get("args", [])]
        if any("pip install" in part for part in argv):
            raise PodError(
                f"{path}: the container command pip-installs packages, which a pod cannot do "
                "offline; build the components with the project image (install_kfp_package=False)"
            )
        mounts = [m["mountPath"] for m in self.platform.get(label, {}).get("pvcMount", [])]
        if len(mounts) > 1:
            raise PodError(f"{path}: mounts {len(mounts)} volumes; one workspace PVC is expected")
        mount_path = mounts[0] if mounts else WORKSPACE_MOUNT
        executor_input = self._executor_input(component, name, params, artifacts)
        command = placeholder_utils.replace_placeholders(
            full_command=argv,
            executor_input_dict=executor_input,
            pipeline_resource_name=self.name,
            task_resource_name=name,
            pipeline_root=self.pipeline_root,
            unique_pipeline_id=self.run_id,
        )
        task_dir = self.logs / name
        shutil.rmtree(task_dir, ignore_errors=True)
        outputs, pod_store = task_dir / "outputs", task_dir / "store"
        outputs.mkdir(parents=True)
        # The launcher downloads the task's input artifacts into the pod and uploads its
        # outputs afterwards: a pod sees no other task's artifacts under /minio.
        for art in artifacts.values():
            _copy(self.host_path(art), self.host_path(art, pod_store))
        for spec in executor_input["outputs"]["artifacts"].values():
            out = RuntimeArtifact("out", spec["artifacts"][0]["uri"])
            self.host_path(out, pod_store).parent.mkdir(parents=True, exist_ok=True)
        local_root = RuntimeArtifact("root", self.pipeline_root).pod_path
        result = run_in_pod(
            command,
            self.workspace,
            mount_path,
            binds=[Bind(local_root, pod_store), Bind(OUTPUTS_DIR, outputs)],
            env={**self.env, **_container_env(container)},
            timeout_s=self.timeout_s,
            log_path=self.logs / f"{name}.log",
        )
        run = TaskRun(path, component_name, executor_input=executor_input, result=result)
        if result.returncode != 0:
            raise PodError(
                f"{path} failed in its pod (exit {result.returncode}); its output ends:\n"
                f"{result.tail()}"
            )
        self.echo(f"[pod] {path}: done in {result.seconds:.1f} s")
        run.parameters, run.artifacts = self._outputs(component, executor_input, outputs)
        for art in run.artifacts.values():
            _copy(self.host_path(art, pod_store), self.host_path(art))
        shutil.rmtree(pod_store)
        return run

    def _executor_input(
        self,
        component: Mapping[str, Any],
        task: str,
        params: Mapping[str, Any],
        artifacts: Mapping[str, RuntimeArtifact],
    ) -> dict[str, Any]:
        task_root = f"{self.pipeline_root}/{self.name}/{self.run_id}/{task}"
        outputs = component.get("outputDefinitions", {})
        return {
            "inputs": {
                "parameterValues": dict(params),
                "artifacts": {k: {"artifacts": [a.message()]} for k, a in artifacts.items()},
            },
            "outputs": {
                "parameters": {
                    k: {"outputFile": f"{OUTPUTS_DIR}/parameters/{k}"}
                    for k in outputs.get("parameters", {})
                },
                "artifacts": {
                    k: {"artifacts": [_typed(k, f"{task_root}/{k}", spec).message()]}
                    for k, spec in outputs.get("artifacts", {}).items()
                },
                "outputFile": f"{OUTPUTS_DIR}/{EXECUTOR_OUTPUT}",
            },
        }

    def _outputs(
        self, component: Mapping[str, Any], executor_input: Mapping[str, Any], outputs: Path
    ) -> tuple[dict[str, Any], dict[str, RuntimeArtifact]]:
        """The task's output parameters and artifacts, from its executor output file."""
        written = outputs / EXECUTOR_OUTPUT
        output = json.loads(written.read_text(encoding="utf-8")) if written.is_file() else {}
        params = dict(output.get("parameterValues", {}))
        for key in component.get("outputDefinitions", {}).get("parameters", {}):
            file = outputs / "parameters" / key
            if key not in params and file.is_file():
                params[key] = file.read_text(encoding="utf-8")
        arts: dict[str, RuntimeArtifact] = {}
        declared = component.get("outputDefinitions", {}).get("artifacts", {})
        for key, spec in declared.items():
            given = executor_input["outputs"]["artifacts"][key]["artifacts"][0]
            got = (output.get("artifacts", {}).get(key, {}).get("artifacts") or [given])[0]
            art = _typed(key, str(got.get("uri") or given["uri"]), spec)
            art.metadata = dict(got.get("metadata") or {})
            arts[key] = art
        return params, arts


def _copy(src: Path, dst: Path) -> None:
    """Copy an artifact's file or folder (a missing one: nothing, as the launcher)."""
    if src.is_dir():
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(src, dst)
    elif src.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)


def _typed(name: str, uri: str, spec: Mapping[str, Any]) -> RuntimeArtifact:
    kind = spec.get("artifactType", {})
    return RuntimeArtifact(
        name,
        uri,
        schema_title=kind.get("schemaTitle", "system.Artifact"),
        schema_version=kind.get("schemaVersion", "0.0.1"),
    )


def _upstream(spec: Mapping[str, Any]) -> set[str]:
    """The sibling tasks a task waits for: its dependencies and the producers it reads."""
    deps = set(spec.get("dependentTasks", []))
    for kind, key in (("parameters", "taskOutputParameter"), ("artifacts", "taskOutputArtifact")):
        for source in spec.get("inputs", {}).get(kind, {}).values():
            if key in source:
                deps.add(source[key]["producerTask"])
    return deps


def _output(done: Mapping[str, TaskRun], path: str, producer: str, key: str) -> Any:
    run = done.get(producer)
    if run is None or run.skipped:
        raise PodError(f"{path}: reads {producer}.{key}, but {producer} did not run")
    if key not in run.parameters:
        raise PodError(f"{path}: {producer} has no output parameter {key}")
    return run.parameters[key]


def _add_defaults(component: Mapping[str, Any], params: dict[str, Any]) -> None:
    """The component's declared defaults for inputs the task does not set (as the driver)."""
    for key, definition in component.get("inputDefinitions", {}).get("parameters", {}).items():
        if key not in params and "defaultValue" in definition:
            params[key] = definition["defaultValue"]


def _dag_outputs(
    dag: Mapping[str, Any], path: str, inner: Mapping[str, TaskRun]
) -> tuple[dict[str, Any], dict[str, RuntimeArtifact]]:
    """A DAG's declared outputs from its tasks (``valueFromOneof``: the branch that ran)."""
    outputs = dag.get("outputs", {})
    params: dict[str, Any] = {}
    for key, source in outputs.get("parameters", {}).items():
        selectors = (
            [source["valueFromParameter"]]
            if "valueFromParameter" in source
            else source.get("valueFromOneof", {}).get("parameterSelectors", [])
        )
        for selector in selectors:
            run = inner.get(selector["producerSubtask"])
            if run is not None and not run.skipped:
                params[key] = run.parameters[selector["outputParameterKey"]]
                break
    arts: dict[str, RuntimeArtifact] = {}
    for key, source in outputs.get("artifacts", {}).items():
        for selector in source.get("artifactSelectors", []):
            run = inner.get(selector["producerSubtask"])
            if run is not None and not run.skipped:
                arts[key] = run.artifacts[selector["outputArtifactKey"]]
                break
    return params, arts


def _container_env(container: Mapping[str, Any]) -> dict[str, str]:
    return {str(e["name"]): str(e.get("value", "")) for e in container.get("env", [])}


# --- trigger conditions ------------------------------------------------------------------

_CEL_PARAM = re.compile(r"inputs\.parameter_values\[('(?:[^'\\]|\\.)*')\]")


def evaluate_condition(condition: str, params: Mapping[str, Any]) -> bool:
    """A KFP trigger condition (the CEL subset the compiler emits) on the task's inputs.

    Supported: ``inputs.parameter_values['name']``, string/number/boolean literals,
    ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``&&``, ``||`` and ``!(…)``.

    Raises:
        PodError: anything else, or a parameter the task does not have.
    """
    text = _CEL_PARAM.sub(r"_p[\1]", condition)
    text = re.sub(r"!\s*\(", " not (", text.replace("&&", " and ").replace("||", " or "))
    text = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", text)).strip()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise PodError(f"condition {condition!r} is not supported: {exc.msg}") from None
    ops: dict[type, Callable[[Any, Any], bool]] = {
        ast.Eq: lambda a, b: bool(a == b),
        ast.NotEq: lambda a, b: bool(a != b),
        ast.Lt: lambda a, b: bool(a < b),
        ast.LtE: lambda a, b: bool(a <= b),
        ast.Gt: lambda a, b: bool(a > b),
        ast.GtE: lambda a, b: bool(a >= b),
    }

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name):
            key = value(node.slice)
            if node.value.id == "_p" and key in params:
                return params[key]
            raise PodError(f"condition {condition!r}: no input parameter {key!r}")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not value(node.operand)
        if isinstance(node, ast.BoolOp):
            values = [bool(value(v)) for v in node.values]
            return all(values) if isinstance(node.op, ast.And) else any(values)
        if isinstance(node, ast.Compare):
            left = value(node.left)
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                compare = ops.get(type(op))
                if compare is None:
                    raise PodError(f"condition {condition!r}: unsupported operator")
                right = value(right_node)
                if not compare(left, right):
                    return False
                left = right
            return True
        raise PodError(f"condition {condition!r}: unsupported expression {ast.dump(node)[:60]}")

    return bool(value(tree.body))


# --- Katib trial pods ---------------------------------------------------------------------


@dataclass(frozen=True)
class TrialContainer:
    """A trial's primary container after Katib's substitutions."""

    command: list[str]
    env: dict[str, str]
    working_dir: str


def sample_assignments(experiment: Mapping[str, Any], seed: int = 0) -> dict[str, str]:
    """One value per search parameter, drawn from its feasible space, as Katib sends them
    (strings)."""
    rng = random.Random(seed)
    out: dict[str, str] = {}
    for p in experiment["spec"]["parameters"]:
        space = p["feasibleSpace"]
        kind = p["parameterType"]
        if kind == "categorical" or "list" in space:
            out[p["name"]] = str(rng.choice(space["list"]))
        elif kind == "int":
            out[p["name"]] = str(rng.randint(int(space["min"]), int(space["max"])))
        else:
            low, high = float(space["min"]), float(space["max"])
            if space.get("distribution") == "logUniform":
                v = math.exp(rng.uniform(math.log(low), math.log(high)))
            else:
                v = rng.uniform(low, high)
            out[p["name"]] = repr(v)
    return out


def katib_trial_container(
    experiment: Mapping[str, Any],
    trial_name: str,
    assignments: Mapping[str, str],
    *,
    namespace: str | None = None,
) -> TrialContainer:
    """The trial's primary container as Katib's controller makes it.

    Every ``${trialParameters.<name>}`` in the trial template is replaced by the
    value its reference names: a search parameter's assignment, ``${trialSpec.Name}``
    (the trial's name) or ``${trialSpec.Namespace}``.

    Raises:
        PodError: a reference or a placeholder this does not know, or an env var
            from a Secret that is not optional (no Secret exists here).
    """
    spec = experiment["spec"]["trialTemplate"]
    values: dict[str, str] = {}
    meta = {
        "${trialSpec.Name}": trial_name,
        "${trialSpec.Namespace}": namespace or experiment["metadata"].get("namespace", ""),
    }
    for tp in spec.get("trialParameters", []):
        ref = tp["reference"]
        if ref in meta:
            values[tp["name"]] = meta[ref]
        elif ref in assignments:
            values[tp["name"]] = assignments[ref]
        else:
            raise PodError(f"trialParameter {tp['name']}: unknown reference {ref!r}")

    def substitute(node: Any) -> Any:
        if isinstance(node, str):
            for name, value in values.items():
                node = node.replace(f"${{trialParameters.{name}}}", value)
            if "${trialParameters." in node:
                raise PodError(f"unsubstituted trial parameter in {node!r}")
            return node
        if isinstance(node, list):
            return [substitute(v) for v in node]
        if isinstance(node, dict):
            return {k: substitute(v) for k, v in node.items()}
        return node

    job = substitute(spec["trialSpec"])
    containers = job["spec"]["template"]["spec"]["containers"]
    primary = next(c for c in containers if c["name"] == spec["primaryContainerName"])
    env: dict[str, str] = {}
    for var in primary.get("env", []):
        if "value" in var:
            env[var["name"]] = str(var["value"])
            continue
        ref = var.get("valueFrom", {}).get("secretKeyRef", {})
        if not ref.get("optional"):
            raise PodError(f"env {var['name']}: needs a Secret that does not exist here")
    command = [*primary.get("command", []), *primary.get("args", [])]
    return TrialContainer(command, env, primary.get("workingDir", "/"))


def stdout_collector_command(command: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """The argv Katib's StdOut collector gives the trial container (after the kubelet's
    ``$(VAR)`` expansion): the command and its args joined by spaces, unquoted, in ``sh -c``,
    output to :data:`KATIB_METRICS_LOG`, a ``<pid>.pid`` file marking a clean exit."""
    joined = " ".join(command)
    wrapped = [
        "sh",
        "-c",
        f"{joined} 1>{KATIB_METRICS_LOG} 2>&1 && echo completed > {KATIB_LOG_DIR}/$$$$.pid",
    ]
    return [kubelet_expand(part, env) for part in wrapped]


def kubelet_expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' expansion of a container's command/args: ``$(VAR)`` from the container's
    env (left as is when undefined), ``$$`` for a literal ``$``."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and (end := text.find(")", i + 2)) != -1:
            name = text[i + 2 : end]
            out.append(env[name] if name in env else text[i : end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class MetricLine:
    """One metric Katib's collector reads: its line's leading time (None: none) and value."""

    timestamp: str | None
    name: str
    value: float


def katib_metrics(text: str, names: Iterable[str]) -> list[MetricLine]:
    """The metrics ``names`` in a ``metrics.log``, read as Katib's TEXT format does: per
    line, the leading RFC 3339 time and every :data:`KATIB_METRIC_REGEX` match."""
    wanted = set(names)
    pattern = re.compile(KATIB_METRIC_REGEX)
    found: list[MetricLine] = []
    for line in text.splitlines():
        first = line.split(" ", 1)[0]
        stamp = first if RFC3339.fullmatch(first) else None
        for match in pattern.finditer(line):
            name, raw = match.group(1), match.group(2)
            if name in wanted and raw not in ("", "+", "-", "."):
                try:
                    found.append(MetricLine(stamp, name, float(raw)))
                except ValueError:
                    continue
    return found


__all__ = [
    "EXECUTOR_OUTPUT",
    "KATIB_LOG_DIR",
    "KATIB_METRICS_LOG",
    "KATIB_METRIC_REGEX",
    "OUTPUTS_DIR",
    "PIPELINE_ROOT",
    "RFC3339",
    "WORKSPACE_MOUNT",
    "Bind",
    "MetricLine",
    "PodDriver",
    "PodError",
    "PodResult",
    "RuntimeArtifact",
    "TaskRun",
    "TrialContainer",
    "evaluate_condition",
    "image_roots",
    "katib_metrics",
    "katib_trial_container",
    "kubelet_expand",
    "pod_env",
    "pod_support",
    "run_in_pod",
    "sample_assignments",
    "stdout_collector_command",
]
