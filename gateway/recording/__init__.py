"""Recording: the call record (`record`) leaves the request path through the durable local
log (`log`) and the queue in front of it (`queue`), and reaches the store (`store/`) in
priced batches (`writer`)."""
