"""The HTTP-facing side: routes, conditional requests, the served view of a store, the server."""
