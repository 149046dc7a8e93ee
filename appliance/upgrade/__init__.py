"""`tidings upgrade`: a verified release, installed with a way back (issue 14).

packaging.md §3.2 is the algorithm (`appliance.upgrade.run`): the release is
fetched from a release server (`fetch`, bounded, https only) and verified
before anything changes (`release`); the executable is downloaded beside the
installed one, checked and run once (`executable`); the store is backed up
(`appliance.backup`), the executable swapped, the store migrated by the new
executable, the service restarted through systemd and checked
(`health`); any failure after the swap rolls back (`rollback`).  Nothing is
fetched except when the operator runs the command: no update checks,
no telemetry.
"""
