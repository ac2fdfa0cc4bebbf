"""Tenants in SQL: hashed API keys (create, look up, revoke, throttled last-used), per-tenant
limits, and budget admission that stays exact under concurrent submissions (SQLite and
PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from shared.db.orm import ApiKey, Input, Job, utcnow
from shared.db.session import session_scope
from shared.errors import JobTooExpensive, QuotaExceeded
from shared.jobs import api_keys, inputs, quotas, store, tenants
from shared.settings import Settings

SPEC = {"method": "fast", "content": "a" * 64}


def settings(**quota: float) -> Settings:
    return Settings(**{f"quota_{k}": v for k, v in quota.items()})


def submit(tenant: str, cfg: Settings, cost: float = 1.0) -> str:
    job, _ = store.create_job(tenant, SPEC, estimated_cost=cost,
                              admit=lambda s: quotas.admit_job(s, tenant, cost, cfg))
    return job.id


def jobs_of(tenant: str) -> int:
    with session_scope() as session:
        return int(session.scalar(select(func.count()).select_from(Job).where(Job.tenant == tenant)) or 0)


# --- API keys ----------------------------------------------------------------------------


def test_created_key_is_stored_only_as_its_hash(db_url: str) -> None:
    # given a new key
    row, key = api_keys.create_key("acme", "ci")
    # expect a random sf_ key shown once; SQL holds its sha256 and a display prefix, never the key
    assert key.startswith("sf_") and len(key) == 3 + 43
    with session_scope() as session:
        stored = session.get(ApiKey, row.id)
        assert stored is not None
        assert stored.key_hash == api_keys.hash_key(key) and key not in (stored.key_hash, stored.prefix)
        assert key.startswith(stored.prefix) and len(stored.prefix) == 11
    # and it is found by the key, not by anything else
    found = api_keys.lookup(key)
    assert found is not None and found.tenant == "acme" and found.revoked_at is None
    assert api_keys.lookup(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert api_keys.create_key("acme", "ci")[1] != key


def test_revoked_key_is_marked_and_still_counts_as_a_key(db_url: str) -> None:
    # given a tenant's only key, revoked by its prefix
    row, key = api_keys.create_key("acme", "ci")
    revoked = api_keys.revoke_key(row.prefix)
    # expect the row to stay, with revoked_at set; revoking again changes nothing
    assert revoked.revoked_at is not None
    assert api_keys.revoke_key(row.id).revoked_at == revoked.revoked_at
    assert api_keys.lookup(key).revoked_at is not None  # type: ignore[union-attr]
    assert api_keys.any_keys()  # revoking the last key must not open the API
    assert [k.id for k in api_keys.list_keys("acme")] == [row.id]


def test_last_used_is_written_at_most_once_per_interval(db_url: str) -> None:
    # given a key used three times: now, 10 s later and 61 s later
    row, _ = api_keys.create_key("acme", "ci")
    t0 = utcnow()
    # expect the first and the third use to write, not the second
    assert api_keys.touch(row.id, 60, now=t0)
    assert not api_keys.touch(row.id, 60, now=t0 + timedelta(seconds=10))
    assert api_keys.touch(row.id, 60, now=t0 + timedelta(seconds=61))
    assert api_keys.find_key(row.id).last_used_at == t0 + timedelta(seconds=61)


def test_key_cache_answers_from_memory_and_records_a_use_once_under_concurrency(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from api.deps import KeyCache

    # given a stored key and the API's cache, its SQL calls counted (and still made)
    _, key = api_keys.create_key("t1", "ci")
    calls = {"lookup": 0, "touch": 0}
    for name in calls:
        real = getattr(api_keys, name)

        def counted(*a: object, _real=real, _name=name, **kw: object) -> object:
            calls[_name] += 1
            return _real(*a, **kw)

        monkeypatch.setattr(api_keys, name, counted)
    cache = KeyCache(ttl_s=60, touch_interval_s=60)
    # expect nothing known before the first lookup (the API then goes to the thread pool)
    assert cache.tenant_known(key) == (False, None)
    # when 8 threads resolve the key at once
    barrier = threading.Barrier(8)
    seen: list[str | None] = []

    def resolve() -> None:
        barrier.wait()
        seen.append(cache.tenant_of(key))

    threads = [threading.Thread(target=resolve) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # expect the tenant for all, the key's use recorded once, and later answers from memory
    assert seen == ["t1"] * 8 and calls["touch"] == 1 and calls["lookup"] >= 1
    lookups = calls["lookup"]
    assert cache.tenant_known(key) == (True, "t1") and cache.tenant_known("sf_unknown") == (False, None)
    assert cache.tenant_of(key) == "t1" and calls == {"lookup": lookups, "touch": 1}


def test_a_key_for_an_invalid_tenant_is_refused(db_url: str) -> None:
    with pytest.raises(ValueError):
        api_keys.create_key("../etc", "x")


# --- limits and admission ------------------------------------------------------------------


def test_tenant_limits_override_the_defaults_and_default_restores(db_url: str) -> None:
    cfg = settings(max_queued_jobs=100)
    tenants.set_limits("acme", max_queued_jobs=2, max_job_cost=50.0)
    with session_scope() as session:
        assert quotas.effective_limits(session, "acme", cfg).max_queued_jobs == 2
        assert quotas.effective_limits(session, "globex", cfg).max_queued_jobs == 100
    tenants.set_limits("acme", max_queued_jobs=None)
    with session_scope() as session:
        limits = quotas.effective_limits(session, "acme", cfg)
    assert (limits.max_queued_jobs, limits.max_job_cost) == (100, 50.0)
    with pytest.raises(ValueError):
        tenants.set_limits("acme", max_queued_jobs=-1)


def test_over_the_queued_limit_nothing_is_written_and_the_problem_names_the_limit(db_url: str) -> None:
    # given a tenant allowed 3 queued jobs that has 3
    cfg = settings(max_queued_jobs=3)
    for _ in range(3):
        submit("acme", cfg)
    # when it submits a fourth, expect 429 naming the limit, its value and the usage; no row
    with pytest.raises(QuotaExceeded) as info:
        submit("acme", cfg)
    problem = info.value.to_problem()
    assert problem["status"] == 429 and problem["type"].endswith("/quota-exceeded")
    assert (problem["limit"], problem["limit_value"], problem["usage"]) == ("max_queued_jobs", 3, 3)
    assert info.value.retry_after_s == cfg.quota_retry_after_s
    assert jobs_of("acme") == 3
    # and once one of them runs and one is canceled, two more fit
    queued = [j.id for j in store.list_jobs("acme")[0]]
    store.claim_job(queued[0], task_id="t", worker="w")
    store.request_cancel(queued[1], "acme")
    submit("acme", cfg)
    submit("acme", cfg)
    with pytest.raises(QuotaExceeded):
        submit("acme", cfg)


def test_jobs_in_flight_and_cost_in_flight_limits(db_url: str) -> None:
    # given 2 jobs in flight (one running) worth 30 of a 50 budget
    cfg = settings(max_jobs_in_flight=3, max_cost_in_flight=50.0)
    first = submit("acme", cfg, cost=20.0)
    submit("acme", cfg, cost=10.0)
    store.claim_job(first, task_id="t", worker="w")
    # expect a job of 25 to pass the cost budget (30 + 25 > 50) -> 429 naming it
    with pytest.raises(QuotaExceeded) as info:
        submit("acme", cfg, cost=25.0)
    assert info.value.extra["limit"] == "max_cost_in_flight" and info.value.extra["usage"] == 30.0
    # and a third job that fits the cost takes the last slot; a fourth is over max_jobs_in_flight
    submit("acme", cfg, cost=5.0)
    with pytest.raises(QuotaExceeded) as info:
        submit("acme", cfg, cost=1.0)
    assert (info.value.extra["limit"], info.value.extra["usage"]) == ("max_jobs_in_flight", 3)


def test_a_job_above_the_single_job_cost_is_422_not_429(db_url: str) -> None:
    cfg = settings(max_job_cost=100.0)
    with pytest.raises(JobTooExpensive) as info:
        submit("acme", cfg, cost=100.5)
    assert info.value.status == 422 and info.value.extra["limit"] == "max_job_cost"
    assert jobs_of("acme") == 0


def test_concurrent_submissions_never_pass_the_limit(db_url: str) -> None:
    # given a limit of 10 queued jobs and 40 submissions racing from 8 threads
    cfg = settings(max_queued_jobs=10)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def burst() -> None:
        barrier.wait()
        for _ in range(5):
            try:
                submit("acme", cfg)
                results.append("ok")
            except QuotaExceeded:
                results.append("429")

    threads = [threading.Thread(target=burst) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    # expect exactly 10 admitted and stored, 30 refused; another tenant is unaffected
    assert results.count("ok") == 10 and results.count("429") == 30
    assert jobs_of("acme") == 10
    submit("globex", cfg)


def test_upload_budget_is_a_rolling_day_and_says_when_to_retry(db_url: str) -> None:
    # given a 1000-byte daily budget, 600 bytes stored 20 h ago and 300 bytes 1 h ago
    cfg = settings(max_upload_bytes_per_day=1000)
    now = utcnow()
    for sha, size, age_h in (("a" * 64, 600, 20), ("b" * 64, 300, 1), ("c" * 64, 5000, 30)):
        inputs.add_input("acme", sha256=sha, key=f"k/{sha}", size=size, content_type="image/png", kind="image")
        with session_scope() as session:
            row = session.scalars(select(Input).where(Input.sha256 == sha)).one()
            row.created_at = now - timedelta(hours=age_h)
    # expect 100 more bytes to fit, and 200 to be refused until the 600 bytes age out (in 4 h)
    quotas.check_upload("acme", 100, cfg, now=now)
    with pytest.raises(QuotaExceeded) as info:
        quotas.check_upload("acme", 200, cfg, now=now)
    assert info.value.extra["limit"] == "max_upload_bytes_per_day" and info.value.extra["usage"] == 900
    assert abs(info.value.retry_after_s - 4 * 3600) <= 2
    quotas.check_upload("globex", 1000, cfg, now=now)
