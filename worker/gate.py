"""The one gate every job passes, and what a member has left.

`admit` is called by the queue inside the very transaction that inserts the
job, and checks everything against the database as it is at that moment: the
channel, the model and its family, the limits, the prompt blocklist, the
user's queued jobs, the cooldown and the daily image quota. Every front door
(slash commands, buttons, reactions, the CLI) queues through it, so no way
round it exists, and fifty simultaneous requests cannot overspend a quota.

Quota is counted from the jobs table itself (`storage.usage`): the images of a
user's queued, running and succeeded jobs in the server since midnight UTC. A
job that fails or is canceled stops counting, which is the refund; a restart
loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import sqlite_utils

from artbot.config import Settings
from artbot.errors import Refusal
from storage.settings import SettingsStore
from storage.usage import Usage
from worker.policy import Policy, Requester, family_group
from worker.requests import JobSpec
from worker.server_settings import DAY


def day_start(now: float) -> float:
    """The start of the quota day (midnight UTC) that `now` is in."""
    return now - now % DAY


def admit(db: sqlite_utils.Database, spec: JobSpec, requester: Requester, settings: Settings,
          now: float) -> dict[str, Any]:
    """The one gate: run by the queue inside the transaction that inserts the job.

    `db` is the connection of that transaction. Raises a UserError (a Refusal,
    or QueueFull) to refuse; returns parameters to add to the job (spoiler,
    safety checker).
    """
    policy = Policy.load(SettingsStore(db), settings, requester.server_id, requester.channel_id)
    policy.check(spec, requester, settings)
    usage = Usage(db)
    usage.check_pending(requester.user_id, policy["max_queued"])
    server = requester.server_id
    if server is not None:
        cooldown = policy["cooldown"]
        last = usage.last_job_at(server, requester.user_id)
        if cooldown and last is not None and now < last + cooldown:
            raise Refusal("cooldown", "Slow down: you can ask again {when}.",
                          retry_at=last + cooldown)
        quota = policy.daily_quota(requester.role_ids)
        if quota is not None:
            used = usage.images_since(server, requester.user_id, day_start(now))
            asked = len(spec.seeds)
            if used + asked > quota:
                left = max(0, quota - used)
                if left:
                    raise Refusal(
                        "quota_partial", "You have {left} of your {images} left today; "
                        "ask for {left} or fewer, or wait until the quota resets {when}.",
                        retry_at=day_start(now) + DAY, left=left, quota=quota, images=images(quota))
                raise Refusal("quota", "You have used your {images} for today; "
                              "the quota resets {when}.", retry_at=day_start(now) + DAY,
                              quota=quota, images=images(quota))
    extra: dict[str, Any] = {}
    if policy["spoiler"]:
        extra["spoiler"] = True
    if family_group(spec.family) == "diffusion" and policy.unfiltered(requester.channel_nsfw):
        extra["options"] = {**spec.params.get("options", {}), "safety_checker": False}
    return extra


def images(n: int) -> str:
    return f"{n} image" + ("" if n == 1 else "s")


def gate(spec: JobSpec, requester: Requester, settings: Settings,
         clock: Callable[[], float]) -> Callable[[sqlite_utils.Database], dict[str, Any]]:
    """`admit` bound to one request, as `JobStore.submit(admit=...)` wants it."""
    return lambda db: admit(db, spec, requester, settings, clock())


@dataclass
class QuotaStatus:
    quota: int | None  # None: unlimited
    used: int
    resets_at: float
    cooldown_until: float | None  # set while the member must wait
    pending: int
    max_queued: int

    @property
    def left(self) -> int | None:
        return None if self.quota is None else max(0, self.quota - self.used)


def quota_status(db: sqlite_utils.Database, settings: Settings, requester: Requester,
                 now: float) -> QuotaStatus:
    """What /quota tells a member."""
    policy = Policy.load(SettingsStore(db), settings, requester.server_id, requester.channel_id)
    usage = Usage(db)
    last = usage.last_job_at(requester.server_id, requester.user_id)
    cooldown_until = last + policy["cooldown"] if last is not None and policy["cooldown"] else None
    return QuotaStatus(
        quota=policy.daily_quota(requester.role_ids),
        used=usage.images_since(requester.server_id, requester.user_id, day_start(now)),
        resets_at=day_start(now) + DAY,
        cooldown_until=cooldown_until if cooldown_until and cooldown_until > now else None,
        pending=usage.pending_count(requester.user_id),
        max_queued=policy["max_queued"],
    )
