"""The one HTTP client that talks to an upstream (no environment proxies, no redirects,
size caps, one deadline, one error type): used by replicas, check, history and audit."""
