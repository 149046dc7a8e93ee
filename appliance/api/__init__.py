"""The backend REST API (SPEC M8): requests in, responses out, no sockets here."""
