"""Input and model helpers of shared.jobs."""

from __future__ import annotations

import pytest

from shared.errors import Conflict, NotFound
from shared.jobs import inputs, model_registry, store

SHA = "cd" * 32


def add(tenant: str = "t1", sha: str = SHA) -> tuple:
    return inputs.add_input(
        tenant, sha256=sha, key=f"tenants/{tenant}/inputs/{sha}", size=10, content_type="image/png",
        kind="image", width=4, height=3,
    )


def test_given_same_bytes_twice_expect_one_row(db_url: str) -> None:
    first, created = add()
    again, created_again = add()
    assert created and not created_again and again.id == first.id
    assert inputs.get_input(SHA, "t1").width == 4


def test_given_other_tenant_expect_separate_rows_and_isolation(db_url: str) -> None:
    add("t1")
    with pytest.raises(NotFound):
        inputs.get_input(SHA, "t2")
    _, created = add("t2")
    assert created
    assert set(inputs.find_inputs("t1", [SHA, "ee" * 32])) == {SHA}


def register(name: str = "mosaic", tenant: str | None = None, checksum: str = "c1", **kw: object):
    return model_registry.register_model(
        name=name, kind="fast", checksum=checksum, storage_key=f"models/{name}", tenant=tenant,
        style_names=["a", "b"], thumbnails={0: "thumb/0.png"}, **kw,
    )


def test_given_builtin_registered_twice_expect_idempotent(db_url: str) -> None:
    a = register("multistyle26", model_id="multistyle26")
    b = register("multistyle26")
    assert a.id == b.id == "multistyle26" and b.thumbnails == {"0": "thumb/0.png"}


def test_given_same_name_other_weights_expect_conflict_unless_replace(db_url: str) -> None:
    a = register()
    with pytest.raises(Conflict):
        register(checksum="c2")
    b = register(checksum="c2", replace=True)
    assert b.id == a.id and model_registry.get_model(a.id, "t1").checksum == "c2"


def test_given_global_and_tenant_models_expect_visibility_rules(db_url: str) -> None:
    glob = register("shared")
    mine = register("mine", tenant="t1")
    register("theirs", tenant="t2")
    assert [m.name for m in model_registry.list_models("t1")] == ["mine", "shared"]
    assert model_registry.get_model("mine", "t1").id == mine.id
    assert model_registry.get_model(glob.id, "t1").id == glob.id
    with pytest.raises(NotFound):
        model_registry.get_model("theirs", "t1")
    shadow = register("shared", tenant="t1")
    assert model_registry.get_model("shared", "t1").id == shadow.id  # own name shadows the global one
    assert model_registry.get_model("shared", "t2").id == glob.id


def test_given_a_name_that_is_another_models_id_expect_the_id_first_and_hidden_ids_refused(db_url: str) -> None:
    # given a global model, a tenant's model NAMED like the global one's id, and another
    # tenant's model
    glob = register("shared-net")
    mine = register(glob.id, tenant="t1")
    theirs = register("private", tenant="t2")
    # when looked up by that string, expect the model with that id (ids come before names),
    # and by the tenant's other spelling its own model
    assert model_registry.get_model(glob.id, "t1").id == glob.id
    assert model_registry.get_model(mine.id, "t1").id == mine.id
    # expect another tenant's model invisible by id and by name
    for ref in (theirs.id, "private"):
        with pytest.raises(NotFound):
            model_registry.get_model(ref, "t1")
    assert model_registry.get_model(theirs.id, "t2").id == theirs.id


def test_given_training_job_when_succeeded_with_model_expect_link(db_url: str) -> None:
    job, _ = store.create_job("t1", {"method": "fast", "content": SHA})
    claimed = store.claim_job(job.id, task_id="t", worker="w")
    assert claimed is not None
    model = register("trained", tenant="t1", created_by_job=job.id)
    done = store.succeed_job(job.id, {"keys": {}, "metrics": {}}, model_id=model.id, token=claimed.fencing_token)
    assert done.model_id == model.id
