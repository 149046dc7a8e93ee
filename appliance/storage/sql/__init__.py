"""What every SQL backend shares: the writer, the reads, the admin changes,
migrations and the `Storage` implementation over a `dialect.Connection`."""
