"""bgworker's HTTP edge: validates requests, enqueues by task name, serves records and files."""
