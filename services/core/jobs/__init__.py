"""The job ledger (shared kernel): job events, the JobRunner with its circuit breaker, the read models
``scheduled_jobs`` / ``job_executions`` and the generic durable JetStream consumer wiring."""
