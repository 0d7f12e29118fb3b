"""The `artbot` command line: the top layer, a thin shell over the others.

- `cli.main`: the parser and `main()` (the `artbot` script);
- `cli.requests`: draw, vary and stylize: build the request, submit it through
  the queue and the gate, wait for it, save the images;
- `cli.listing`: history, jobs and cancel;
- `cli.rules`: a server's settings and the operator's style presets;
- `cli.serve`: the Discord bot, a worker, and training.

Every command talks to the queue interface (`worker.queue.JobQueue`), as the
bot does; none opens the database itself.
"""
