"""Ferry fault-injection suite (issue 5): real `ferry serve` processes in network namespaces,
an SQS workload recorded as a history, nemeses, and a checker."""
