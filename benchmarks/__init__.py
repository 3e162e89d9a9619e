"""`make bench`: sweeper measured side by side with what users would pick instead (see README.md)."""
