"""A replica: pulls the origin's signed index, history and blobs and verifies all of it."""
