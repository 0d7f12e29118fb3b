"""The queue, the scheduler and the worker loop. Never imports discord.

From a request to a finished job, bottom to top:

- `worker.requests`: what a request means: options validated and turned into
  the `JobSpec` that goes on the queue (the bot and the CLI both build with it);
- `worker.image_files`: the images people give, decoded on purpose (16-bit, CMYK,
  alpha, EXIF rotation, an animation's first frame) or refused in one line;
- `worker.prompts`: prompts as the blocklist sees them, and the blocklist
  (`worker.lookalikes`: look-alike letters of other scripts, words spelt apart);
- `worker.server_settings`: the keys a server's admins set, parsed and shown;
- `worker.policy`: who asks (`Requester`) and the rules of one server (`Policy`);
- `worker.gate`: the one gate every job passes, inside the transaction that
  queues it, and what a member has left (`quota_status`), by the server's quota
  day (`worker.quota_day`: midnight to midnight in its time zone);
- `worker.queue`: the transport interface (`JobQueue`) and its in-process,
  SQLite-backed implementation with live job events;
- `worker.runner`: the `Worker` that owns the device, keeps models loaded and
  runs jobs (imports torch when it starts);
- `worker.privacy`: forgetting a member (their jobs stopped first), a server's
  retention, and a member's history as JSON or CSV.

Scheduling (fair order, per-user caps, batch keys) is done by the SQL in
`storage.jobs`, which every transport shares because the jobs table is the
truth.
"""
