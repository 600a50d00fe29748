"""A serving node: the server's processes (supervisor, workers) and what runs in them."""
