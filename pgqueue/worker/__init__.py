"""The pgqueue_worker processes: supervisor, workers and the maintenance role, one file each."""
