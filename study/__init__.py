"""Study specs, search spaces, running and resuming studies, and their result tables."""
