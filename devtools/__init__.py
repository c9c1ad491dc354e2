"""Development tools shared by the tests, the benchmarks and the local stack (never
packaged for Lambda): today the PostgreSQL finder. Runtime dependencies only (no pytest,
no `tests.` import), so `bench/` runs from a venv made by `make install`."""
