"""`tidings doctor`: checks of the host and the installation, each with a verdict and a fix.

Each check is a small function of a `Subject` (the configuration, and the
running server's report when there is one) returning a `Finding`; the list
of checks is `registry.CHECKS`.  Checks read; they change nothing.  No
click, no transport, no event loop of the server.
"""
