"""The queue, the scheduler and the worker loop. Never imports discord.

From a request to a finished job, bottom to top:

- `worker.requests`: what a request means: options validated and turned into
  the `JobSpec` that goes on the queue (the bot and the CLI both build with it);
- `worker.prompts`: prompts as the blocklist sees them, and the blocklist;
- `worker.server_settings`: the keys a server's admins set, parsed and shown;
- `worker.policy`: who asks (`Requester`) and the rules of one server (`Policy`);
- `worker.gate`: the one gate every job passes, inside the transaction that
  queues it, and what a member has left (`quota_status`);
- `worker.queue`: the transport interface (`JobQueue`) and its in-process,
  SQLite-backed implementation with live job events;
- `worker.runner`: the `Worker` that owns the device, keeps models loaded and
  runs jobs (imports torch when it starts).

Scheduling (fair order, per-user caps, batch keys) is done by the SQL in
`storage.jobs`, which every transport shares because the jobs table is the
truth.
"""
