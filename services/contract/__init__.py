"""The stage contract on PostgreSQL: claim, heartbeat, complete, requeue, fail, release,
cancel, and the sweeper that recovers what the broker lost.

Every transition is one UPDATE guarded by the owner (job, stage, attempt, worker): the attempt
number is a fencing token that never repeats, so a stale attempt (a worker whose lease
expired, that was released on shutdown, or that lost a race) changes no row. PostgreSQL
decides; the broker only delivers.

Lock order, everywhere: the job's row, then its stage rows. A transition that needs both takes
the job first (`lock_job`), so a cancel, a claim and a completion of one job never deadlock.

A transition that queues a stage gives it a fresh message id and returns a `Dispatch`: the
caller sends it after the commit, never before (a message must not overtake its row).
"""

from services.contract.cancel import cancel_job, finish_cancel, request_cancel
from services.contract.parts import PartPlan
from services.contract.records import (
    ACTIVE_JOB_STATUSES,
    NOTIFY,
    Claim,
    ClaimOutcome,
    Dispatch,
    JobState,
    Transition,
    lock_job,
    max_attempts_for,
    next_stage,
    queue_stage,
    record_event,
)
from services.contract.stages import (
    cancel_requested,
    claim_part,
    claim_stage,
    complete_stage,
    fail_stage,
    record_stopped,
    release_stage,
    renew_lease,
    requeue_stage,
    stage_outputs,
    start_parts,
)

__all__ = [
    "ACTIVE_JOB_STATUSES",
    "NOTIFY",
    "Claim",
    "ClaimOutcome",
    "Dispatch",
    "JobState",
    "PartPlan",
    "Transition",
    "cancel_job",
    "cancel_requested",
    "claim_part",
    "claim_stage",
    "complete_stage",
    "fail_stage",
    "finish_cancel",
    "lock_job",
    "max_attempts_for",
    "next_stage",
    "queue_stage",
    "record_event",
    "record_stopped",
    "release_stage",
    "renew_lease",
    "request_cancel",
    "requeue_stage",
    "stage_outputs",
    "start_parts",
]
