"""JSON Schemas (2020-12) shipped with the harness: record formats, dataset specs, suites,
results. Installed as `harness.schemas`."""
