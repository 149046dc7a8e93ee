"""Administrative services shared by the CLI (and later the REST API)."""
