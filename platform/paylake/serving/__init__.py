"""Ray Serve scoring service: the fraud and log-sequence models over HTTP, with auth, limits and records."""
