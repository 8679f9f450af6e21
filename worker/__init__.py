"""bgworker's domain: settings, job records, queues, storage, image processing, tasks."""
