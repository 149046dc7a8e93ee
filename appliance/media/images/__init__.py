"""Images (issue 15): Pillow on untrusted uploads, in worker processes.

* `codec` — probe, sanitize (metadata gone, upright, sRGB) and thumbnail; pure, paths in
  and out; what it refuses and why is in its docstring.
* `headers` — bounded GIF/WebP header scans (frame counts, canvas size) for `codec`.
* `model` — `ImageInfo`, `ImageLimits`, the formats (stdlib only: the server side
  never loads Pillow).
* `protocol` — the pool <-> worker messages: length-prefixed JSON naming paths.
* `process` — one worker process seen from the server (command, environment, pipes),
  and why not `multiprocessing`.
* `worker` — the worker process's main loop (``python -m appliance.media.images.worker``,
  or the frozen executable with `protocol.WORKER_ARG`).
* `pool` — `ImagePool`: the server's async face of the workers (bounded queue, a time
  limit per job that kills the worker, replacement of dead workers).
"""
