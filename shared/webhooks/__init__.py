"""Signed webhooks: one event per job, POSTed when the job reaches a final status.

A job may carry a ``webhook`` URL (a field of the job request beside the spec, stored as
``Job.webhook_url``). When it becomes ``succeeded``, ``failed`` or ``canceled`` the farm
POSTs one event to it, signed as the Standard Webhooks specification says
(https://www.standardwebhooks.com/; headers ``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`` with the
tenant's ``whsec_...`` secret). The body and headers are in ``shared.webhooks.events``.

Modules:

* ``destinations``: which URLs and addresses a webhook may reach (the API checks at submit
  time, the delivery again at connect time, and connects to the address it checked).
* ``secrets``: the tenant's signing secret, made on first use, rotatable.
* ``state``: the delivery columns of the job row (the job row IS the outbox): claim an
  attempt with one conditional UPDATE, record its result, find events whose message was lost.
* ``events``: the event body and its signed headers.
* ``transport``: one HTTP POST to a checked address: no redirects, short timeouts,
  response bodies read only up to a small cap.
* ``delivery``: one attempt, start to end, and the backoff before the next.
* ``dispatch``: send the delivery task (``stylefarm.deliver_webhook``) by name on the
  ``cpu`` queue, and resend the lost ones (the sweeper's pass, ``worker.sweeper``).

Who sends the task, and why it is enough (at-least-once): the final status is written
by the store, in one of three places: the worker's task (``succeed_job`` / ``fail_job`` /
``mark_canceled``, all through ``worker.tasks._finish``), the API (``request_cancel`` of a
queued job) and the sweeper (``expire_lease`` of a job whose worker died past its attempt
budget). All three send the task right after their write. Anything that did not get its message (a broker
outage, a worker that died between the write and the
send, a retry message lost) is found by ``state.lost_deliveries`` (pending events due for
longer than ``dispatch.RESEND_AFTER_S``) and sent again by the sweeper's pass. A
message delivered twice is harmless: ``state.claim_attempt`` lets one attempt through at a
time, and the receiver dedupes on ``webhook-id``, which is the same for every attempt.
"""
