"""The queue, the scheduler and the worker loop.

- `worker.jobs`: what a request means: validating options and building the job
  that goes on the queue (no torch, no discord; the bot and the CLI both use it).
- `worker.queue`: the transport interface (`JobQueue`) and its in-process,
  SQLite-backed implementation with live job events.
- `worker.runner`: the `Worker` that owns the device, keeps models loaded and
  runs jobs (imports torch when it starts).

Scheduling (fair order, per-user caps, batch keys) is done by the SQL in
`storage.jobs`, which every transport shares because the jobs table is the
truth.
"""
