"""The Kubernetes engine's admission webhook: Knative-style defaulting (a JSONPatch) and validation
of Flint's kinds, with the same hooks as the embedded API (`controller.api.registry`).

`review` decodes an `admission.k8s.io/v1` AdmissionReview and decides the answer (pure);
`server` serves `/admission/defaulting` and `/admission/validation` on a TLS listener of its own.
The webhook asks no credential of its caller: the cluster's API server calls it after it has
authenticated and authorised the user's request itself, as Knative's webhooks are called; it
only reads the object it is sent and answers, it changes nothing.
"""
