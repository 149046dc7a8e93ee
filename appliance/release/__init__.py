"""Releases: the signed manifest, checksums and the keys this build trusts.

Format (issue 14; packaging/release.sh writes it, installer/install.sh and
`tidings upgrade` read it).  A release is a directory ``<base>/<version>/``,
and ``<base>/latest/`` is the newest one:

- ``tidings-linux-<arch>``: the one-file executable;
- ``install.sh``: the installer, the public key embedded;
- ``manifest.json``: `Manifest` (version, oldest version it upgrades from,
  files with sha256 and size);
- ``SHA256SUMS``: ``sha256sum`` output for every other file, sorted by name;
- ``SHA256SUMS.sig``: the raw 64-byte Ed25519 signature of ``SHA256SUMS``.

The signature covers the sums, the sums cover the manifest, the manifest
names the version: a file from another release or version cannot pass for
this one (Syncthing binds its signature to the name for the same reason).
"""
