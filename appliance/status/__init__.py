"""What a running server says about itself, and what `tidings status` makes of it.

`report` is the file format (``<data_dir>/run/status.json``) the server
writes every few seconds and the CLI reads; `process` tells whether the pid
in it is still that server; `probe` asks the server's own ``/v1/health``;
`view` puts them together with systemd's view of the unit.  No event loop,
no store, no click: the server's side lives in `appliance.transport.status_report`.
"""
