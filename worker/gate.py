"""The one gate every job passes, and what a member has left.

`admit` is called by the queue inside the very transaction that inserts the
job, and checks everything against the database as it is at that moment: the
channel, the model and its family, the limits, the prompt blocklist, the
user's queued jobs, the cooldown and the daily image quota. Every front door
(slash commands, buttons, reactions, the CLI) queues through it, so no way
round it exists, and fifty simultaneous requests cannot overspend a quota.

Quota is counted from the jobs table itself (`storage.usage`): the images of a
user's queued, running and succeeded fast jobs in the server since the last
midnight in the server's `timezone` (`worker.quota_day`; UTC by default). A
job that fails or is canceled stops counting, which is the refund; a restart
loses nothing.

Fast and relax time (as Midjourney has them): the daily quota (or the member's
role tier) is their amount of fast images. Past it, where the server's `relax`
setting is on (the default), a job is still admitted, into the relax queue: it
runs only when no fast job waits (`storage.jobs.JobStore.claim`). Relax images
use no fast time; with `relax` off, a member past their quota is refused.
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
from worker.quota_day import day_start, next_day_start
from worker.requests import JobSpec


def admit(db: sqlite_utils.Database, spec: JobSpec, requester: Requester, settings: Settings,
          now: float) -> dict[str, Any]:
    """The one gate: run by the queue inside the transaction that inserts the job.

    `db` is the connection of that transaction. Raises a UserError (a Refusal,
    or QueueFull) to refuse; returns parameters to add to the job (spoiler,
    safety checker, and `relax: True` for a job queued in relax time, which
    `JobStore.submit` also stores in the job's `relax` column).

    A job runs in fast time only if all of its images fit in the fast images the
    member has left today; a job never runs partly fast and partly relax. So with
    2 fast images left, a request for 4 runs wholly in relax time, and the 2 stay
    for a later, smaller request; a request for 2 uses them. This is Midjourney's
    rule (once a job does not fit in the fast time left, it goes to relax) and what
    a member asking for a grid expects: their job runs, only later, rather than
    being refused or cut down. With the server's `relax` off, the same request is
    refused and says how many fast images are left (`quota_partial`), or that
    they are all used (`quota`).
    """
    policy = Policy.load(SettingsStore(db), settings, requester.server_id, requester.channel_id)
    policy.check(spec, requester, settings)
    usage = Usage(db)
    usage.check_pending(requester.user_id, policy["max_queued"])
    server = requester.server_id
    relax = False
    if server is not None:
        cooldown = policy["cooldown"]
        last = usage.last_job_at(server, requester.user_id)
        if cooldown and last is not None and now < last + cooldown:
            raise Refusal("cooldown", "Slow down: you can ask again {when}.",
                          retry_at=last + cooldown)
        quota = policy.daily_quota(requester.role_ids)
        if quota is not None:
            zone = policy["timezone"]
            used = usage.images_since(server, requester.user_id, day_start(now, zone))
            asked = len(spec.seeds)
            if used + asked > quota and policy["relax"]:
                relax = True
            elif used + asked > quota:
                left = max(0, quota - used)
                if left:
                    raise Refusal(
                        "quota_partial", "You have {left} of your {images} left today; "
                        "ask for {left} or fewer, or wait until the quota resets {when}.",
                        retry_at=next_day_start(now, zone), left=left, quota=quota,
                        images=images(quota))
                raise Refusal("quota", "You have used your {images} for today; "
                              "the quota resets {when}.", retry_at=next_day_start(now, zone),
                              quota=quota, images=images(quota))
    extra: dict[str, Any] = {}
    if relax:
        extra["relax"] = True
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
    quota: int | None  # fast images a day; None: unlimited
    used: int  # fast images today
    resets_at: float  # the next midnight in `timezone`
    cooldown_until: float | None  # set while the member must wait
    pending: int
    max_queued: int
    relax_enabled: bool = True  # the server's `relax`: past the quota, jobs go to relax
    relax_used: int = 0  # images today in relax time
    timezone: str = "UTC"  # the server's quota day runs from midnight to midnight here

    @property
    def left(self) -> int | None:
        """Fast images left today; None: unlimited."""
        return None if self.quota is None else max(0, self.quota - self.used)

    @property
    def mode(self) -> str | None:
        """Which time the member is on now: "fast" while fast images are left (or
        there is no limit), else "relax" where the server has it, else None (new jobs
        are refused until the quota resets)."""
        if self.left is None or self.left > 0:
            return "fast"
        return "relax" if self.relax_enabled else None


def quota_status(db: sqlite_utils.Database, settings: Settings, requester: Requester,
                 now: float) -> QuotaStatus:
    """What /quota tells a member."""
    policy = Policy.load(SettingsStore(db), settings, requester.server_id, requester.channel_id)
    usage = Usage(db)
    last = usage.last_job_at(requester.server_id, requester.user_id)
    cooldown_until = last + policy["cooldown"] if last is not None and policy["cooldown"] else None
    zone = policy["timezone"]
    today = day_start(now, zone)
    return QuotaStatus(
        quota=policy.daily_quota(requester.role_ids),
        used=usage.images_since(requester.server_id, requester.user_id, today),
        resets_at=next_day_start(now, zone),
        cooldown_until=cooldown_until if cooldown_until and cooldown_until > now else None,
        pending=usage.pending_count(requester.user_id),
        max_queued=policy["max_queued"],
        relax_enabled=bool(policy["relax"]),
        relax_used=usage.images_since(requester.server_id, requester.user_id, today, relax=True),
        timezone=zone,
    )
