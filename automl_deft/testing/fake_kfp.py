"""An in-memory stand-in for ``kfp.Client``, for testing code that submits and schedules runs.

:class:`FakeKfpClient` fakes the ``kfp.Client`` methods automl_deft calls (see
:class:`automl_deft.cluster.client.PipelinesClient`): the constructor, listing, looking up
and creating experiments, submitting a run from a compiled package, creating a recurring
run, and the private ``_get_url_prefix`` that the run links are built from. It returns
kfp's real result types (``kfp_server_api`` models, ``RunPipelineResult``) and reads
packages with kfp's own parser, so a package the fake accepts is one kfp can read.

Each faked method keeps the parameter names, kinds and defaults of the real
``kfp.Client`` method; ``tests/cluster/test_client.py`` compares them with
``inspect.signature``, so a kfp upgrade that changes a signature fails that test instead
of leaving the fake quietly out of date.

Pass the class wherever a ``client_factory`` is taken, or build one and hand it over as
the client; then look at what was called and inject failures::

    fake = FakeKfpClient(host="https://kfp.example.com/pipeline", namespace="team-a")
    fake.failures["create_run_from_pipeline_package"] = ApiException(503, "Unavailable")
    submit(fake, package, ...)  # raises InfrastructureError
    assert fake.methods() == ["get_experiment", "create_experiment", ...]
    connect(host, client_factory=FakeKfpClient)
"""

from __future__ import annotations

import os
from typing import Any

import kfp_server_api
from kfp.client.client import RunPipelineResult, _extract_pipeline_yaml

from automl_deft.jsontypes import JSONObject

__all__ = ["FakeKfpClient"]


class FakeKfpClient:
    """The ``kfp.Client`` methods automl_deft calls, in memory, with kfp's own signatures.

    Returns kfp's real result types; reads packages with kfp's own parser, so a package
    the fake accepts is one kfp can read. ``failures[method]`` is raised on the next call.

    Attributes:
        host: the API host it was built with.
        namespace: the default namespace it was built with.
        existing_token: the bearer token it was given, if any.
        calls: every call, in order (failed ones too), as (method, arguments).
        failures: an exception per method name, raised (once) on that method's next call.
        experiments: the stored experiments; append to seed existing ones.
    """

    def __init__(
        self,
        host: str | None = None,
        client_id: str | None = None,
        namespace: str = "kubeflow",
        other_client_id: str | None = None,
        other_client_secret: str | None = None,
        existing_token: str | None = None,
        cookies: str | None = None,
        proxy: str | None = None,
        ssl_ca_cert: str | None = None,
        kube_context: str | None = None,
        credentials: Any = None,
        ui_host: str | None = None,
        verify_ssl: bool | None = None,
    ) -> None:
        """Records the connection settings; only host, namespace, token and UI host matter.

        Args:
            host: the KFP API endpoint.
            client_id: ignored (IAP client id in kfp).
            namespace: the default namespace.
            other_client_id: ignored.
            other_client_secret: ignored.
            existing_token: a bearer token, kept as ``existing_token``.
            cookies: ignored.
            proxy: ignored.
            ssl_ca_cert: ignored.
            kube_context: ignored.
            credentials: ignored.
            ui_host: the UI endpoint for links; ``KF_PIPELINES_UI_ENDPOINT`` wins, as in
                kfp, and ``host`` is the fallback.
            verify_ssl: ignored.
        """
        self.host = host
        self.namespace = namespace
        self.existing_token = existing_token
        self._uihost = os.environ.get("KF_PIPELINES_UI_ENDPOINT", ui_host or host)
        self.calls: list[tuple[str, dict[str, object]]] = []
        self.failures: dict[str, BaseException] = {}
        self.experiments: list[kfp_server_api.V2beta1Experiment] = []
        self._ids = 0

    def _serve(self, method: str, args: dict[str, object]) -> None:
        self.calls.append((method, {k: v for k, v in args.items() if k != "self"}))
        if method in self.failures:
            raise self.failures.pop(method)

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-{self._ids}"

    def _get_url_prefix(self) -> str:
        """The UI prefix run links start with, worked out as kfp does."""
        if self._uihost:
            if self._uihost.startswith(("http://", "https://")):
                return self._uihost
            return "http://" + self._uihost
        return "/pipeline"

    def list_experiments(
        self,
        page_token: str = "",
        page_size: int = 10,
        sort_by: str = "",
        namespace: str | None = None,
        filter: str | None = None,
    ) -> kfp_server_api.V2beta1ListExperimentsResponse:
        """The first ``page_size`` stored experiments in ``namespace`` (all when None).

        Args:
            page_token: recorded, not used.
            page_size: how many experiments to return at most.
            sort_by: recorded, not used.
            namespace: only experiments in this namespace; None for all.
            filter: recorded, not used.

        Returns:
            kfp's response model, with the total count of matching experiments.
        """
        self._serve("list_experiments", locals())
        items = [e for e in self.experiments if namespace in (None, e.namespace)]
        return kfp_server_api.V2beta1ListExperimentsResponse(
            experiments=items[:page_size], total_size=len(items)
        )

    def get_experiment(
        self,
        experiment_id: str | None = None,
        experiment_name: str | None = None,
        namespace: str | None = None,
    ) -> kfp_server_api.V2beta1Experiment:
        """The stored experiment with this name in this namespace.

        Args:
            experiment_id: recorded, not used (lookups are by name).
            experiment_name: the experiment's display name.
            namespace: the namespace it must be in.

        Returns:
            The one matching experiment.

        Raises:
            ValueError: none or several match, with kfp's own messages.
        """
        self._serve("get_experiment", locals())
        found = [
            e
            for e in self.experiments
            if e.display_name == experiment_name and e.namespace == namespace
        ]
        if not found:
            raise ValueError(f"No experiment is found with name {experiment_name}.")
        if len(found) > 1:
            raise ValueError(f"Multiple experiments is found with name {experiment_name}.")
        return found[0]

    def create_experiment(
        self, name: str, description: str | None = None, namespace: str | None = None
    ) -> kfp_server_api.V2beta1Experiment:
        """Stores and returns a new experiment with the next ``exp-N`` id.

        Args:
            name: the display name.
            description: recorded, not stored.
            namespace: the namespace it lives in.

        Returns:
            The new experiment.
        """
        self._serve("create_experiment", locals())
        experiment = kfp_server_api.V2beta1Experiment(
            experiment_id=self._next_id("exp"), display_name=name, namespace=namespace
        )
        self.experiments.append(experiment)
        return experiment

    def create_run_from_pipeline_package(
        self,
        pipeline_file: str,
        arguments: JSONObject | None = None,
        run_name: str | None = None,
        experiment_name: str | None = None,
        namespace: str | None = None,
        pipeline_root: str | None = None,
        enable_caching: bool | None = None,
        cache_key: str | None = None,
        service_account: str | None = None,
        experiment_id: str | None = None,
    ) -> RunPipelineResult:
        """Reads the package with kfp's parser and returns a run with the next ``run-N`` id.

        Args:
            pipeline_file: path to the compiled pipeline package.
            arguments: recorded, not checked.
            run_name: the run's display name.
            experiment_name: recorded; exclusive with ``experiment_id``, as in kfp.
            namespace: recorded, not used.
            pipeline_root: recorded, not used.
            enable_caching: recorded, not used.
            cache_key: recorded, not used.
            service_account: recorded, not used.
            experiment_id: the experiment the run belongs to.

        Returns:
            kfp's own ``RunPipelineResult`` around the new run.

        Raises:
            ValueError: both ``experiment_name`` and ``experiment_id`` are given.
        """
        self._serve("create_run_from_pipeline_package", locals())
        if experiment_name is not None and experiment_id is not None:
            raise ValueError("You cannot specify both experiment_name and experiment_id.")
        _extract_pipeline_yaml(pipeline_file)
        run = kfp_server_api.V2beta1Run(
            run_id=self._next_id("run"), display_name=run_name, experiment_id=experiment_id
        )
        return RunPipelineResult(self, run)

    def create_recurring_run(
        self,
        experiment_id: str,
        job_name: str,
        description: str | None = None,
        start_time: str | None = None,
        end_time: str | None = None,
        interval_second: int | None = None,
        cron_expression: str | None = None,
        max_concurrency: int | None = 1,
        no_catchup: bool | None = None,
        params: JSONObject | None = None,
        pipeline_package_path: str | None = None,
        pipeline_id: str | None = None,
        version_id: str | None = None,
        enabled: bool = True,
        pipeline_root: str | None = None,
        enable_caching: bool | None = None,
        cache_key: str | None = None,
        service_account: str | None = None,
    ) -> kfp_server_api.V2beta1RecurringRun:
        """Reads the package with kfp's parser and returns a recurring run (``rr-N`` id).

        Args:
            experiment_id: the experiment the recurring run belongs to.
            job_name: the recurring run's display name.
            description: recorded, not used.
            start_time: recorded, not used.
            end_time: recorded, not used.
            interval_second: exclusive with ``cron_expression``; exactly one is needed.
            cron_expression: exclusive with ``interval_second``; exactly one is needed.
            max_concurrency: recorded, not used.
            no_catchup: recorded, not used.
            params: recorded, not checked.
            pipeline_package_path: path to the compiled pipeline package.
            pipeline_id: recorded, not used.
            version_id: recorded, not used.
            enabled: recorded, not used.
            pipeline_root: recorded, not used.
            enable_caching: recorded, not used.
            cache_key: recorded, not used.
            service_account: recorded, not used.

        Returns:
            kfp's recurring-run model.

        Raises:
            ValueError: neither or both of ``interval_second`` and ``cron_expression``.
        """
        self._serve("create_recurring_run", locals())
        if bool(interval_second) == bool(cron_expression):
            raise ValueError("Either interval_second or cron_expression is required.")
        _extract_pipeline_yaml(pipeline_package_path)
        return kfp_server_api.V2beta1RecurringRun(
            recurring_run_id=self._next_id("rr"),
            display_name=job_name,
            experiment_id=experiment_id,
        )

    def methods(self) -> list[str]:
        """The names of the methods called so far, in order."""
        return [method for method, _ in self.calls]
