"""Webhooks per tenant, in the Standard Webhooks model: endpoints and their secrets, one
message per event and target kept in PostgreSQL with its attempts, and the signed POST."""
