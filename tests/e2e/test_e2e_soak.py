"""End to end, the chaos soak shortened (``bench/soak.py --one-each``): a few dozen small jobs
through three workers on PostgreSQL + S3 + Redis, with ONE fault of each kind (a whole worker
SIGKILLed and restarted, a pool child SIGKILLed, a worker SIGTERMed and restarted, Redis
restarted, the S3 server paused), then every job accounted for from the API's answers, the
SQL rows, the stored objects and the workers' claim log.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from harness import Unavailable, missing_backend

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]


def _soak_module():
    spec = importlib.util.spec_from_file_location("bench_soak", REPO / "bench" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_soak_with_one_fault_of_each_kind_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    # given: a real farm (3 workers) and a plan with one fault of each kind
    soak_mod = _soak_module()
    soak = soak_mod.Soak(jobs=36, seed=7, drain_s=150, rate=1.0, one_each=True, base=tmp_path / "soak",
                         say=lambda msg: print(msg, flush=True))
    # when: 36 jobs are pushed while the faults land, and the farm drains
    try:
        report = soak.run()
    except Unavailable as exc:
        missing_backend("a soak backend", exc)
    print(soak_mod.table(report))

    # expect: every fault was injected, and every job accounted for
    assert sorted(f["kind"] for f in report["faults"]) == sorted(soak_mod.FAULT_KINDS)
    assert not [f for f in report["faults"] if f["note"].startswith("injection failed")], report["faults"]
    assert report["submitted"] == 36
    assert report["acknowledged"] == 36, report["not_acknowledged"]
    assert report["claims"] >= report["succeeded"] > 0  # the claim log saw every run
    assert report["lost"] == [], report["lost"]
    assert report["run_twice_concurrently"] == [], report["run_twice_concurrently"]
    assert report["fencing_tokens_reused"] == [], report["fencing_tokens_reused"]
    assert report["duplicated_results"] == {}, report["duplicated_results"]
    assert report["stuck"] == {}, report["stuck"]
    assert report["succeeded"] + report["failed"] + report["canceled"] == 36
    slow = [f for f in report["faults"]
            if f["first_success_after_s"] is None or f["first_success_after_s"] > soak_mod.RECOVERY_GOAL_S]
    assert not slow, slow
    assert report["ok"]
