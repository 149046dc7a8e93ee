"""The host the appliance is installed on: its layout, its programs, its systemd.

Shared by the lifecycle commands (setup, upgrade, backup, status, doctor);
no event loop, no store.
"""
