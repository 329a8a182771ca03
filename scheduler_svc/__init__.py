"""HTTP front door: validates requests, writes tasks and schedules, reads status."""
