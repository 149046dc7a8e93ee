"""`tidings setup`: the guided wizard (issue 14, packaging.md §2.1).

The flow (`wizard.run`): collect the answers (flag > answers file > existing
configuration > default; prompts on the terminal only for what is still open),
check each one before anything is written, show a summary, then apply: the
database (``db bootstrap`` for MariaDB), the configuration file (atomically,
keeping every other key and comment), the first app and its secret (shown
once), and under systemd the service, its readiness and a first message sent
with the very request the wizard prints.

Modules: `answers` (the questions and where answers come from), `checks` with
`hostname`, `ports`, `certificate`, `dbchoice` (the validations), `configfile`
(the TOML file), `firstapp`, `service` (systemd), `probe` (health and the first
message), `terminal` (prompts on /dev/tty), `wizard` (the flow).  No click: the
command is `appliance.cli.setup`.
"""
