"""Load on the real local cluster: 20 jobs submitted at once through the Jobs API, queued by Ray's resource
accounting (each job reserves its CPU need of `sweetspot_cpu`), all SUCCEEDED with their outputs.

The jobs are tiny `kind: evaluate` jobs (one 1-CPU measuring task each), so at
most 4 run at once on the 4-CPU local cluster and the rest wait PENDING;
`python -m bench.load --kind mix` runs the same with Train jobs among them.
"""

from __future__ import annotations

import pytest

from bench.load import run_load

JOBS = 20


@pytest.mark.timeout(900)
def test_twenty_jobs_submitted_at_once_all_succeed_with_their_outputs(ray_cluster, tmp_path):
    from cluster.client import JobClient

    capacity = JobClient(ray_cluster).capacity()
    if capacity.pool is None:
        pytest.skip("the local cluster was started without the sweetspot_cpu admission resource "
                    "(before cluster/local.py advertised it): restart it with `sweetspot down && sweetspot up`")
    report = run_load(ray_cluster, JOBS, "evaluate", tmp_path / "runs", timeout=840, prefix="test-load")
    failed = [job for job in report["per_job"] if job["status"] != "SUCCEEDED" or not job["summary_json"]]
    assert report["lost"] == 0 and not failed, failed
    assert report["all_succeeded"] and report["all_outputs"]
    assert report["statuses"] == {"SUCCEEDED": JOBS}
    # Ray queued them: never more reserved than the pool, some waited PENDING while others ran.
    assert report["peak_reserved_cpus"] <= capacity.pool
    assert 2 <= report["peak_running"] <= capacity.pool
    assert any(pending > 0 and running > 0 for _, pending, running, _ in report["timeline"])
    for job in report["per_job"]:
        assert (tmp_path / "runs" / job["name"] / "summary.json").is_file()
