"""`/metrics`: the server's figures in the Prometheus text exposition format (issue 14).

`collector` reads the engine's, the transport's and the edge's counters at
scrape time (the message path pays nothing for a scrape); `exporter` renders
them, bounded in size and time, for the operator key or the addresses of
``[metrics] allow`` (`config`); `wiring` connects them to a running server.
Nothing here is imported at package import: the configuration loads
`config` without prometheus-client.
"""
