"""MariaDB server processes the appliance installs, initialises and runs (SPEC M14).

Process management only; the SQL that creates databases and accounts lives in
`appliance.storage.mariadb.bootstrap`.
"""
