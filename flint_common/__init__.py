"""What both planes use and neither owns: credentials, TLS, private files, process guards.

`flint_common` imports neither `gateway` nor `controller` (an import contract in CI keeps it so),
so the data plane and the control plane can both build on it."""
