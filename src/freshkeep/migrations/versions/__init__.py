"""The revisions of freshkeep's migrations (one module per revision)."""
