"""Job types built on pgqueue's public API that the core never imports: http (pgqueue.http.request)."""
