"""The content-addressed store on disk: blobs, the signed index, its history and state."""
