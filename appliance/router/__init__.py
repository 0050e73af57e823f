"""One message pipeline for every protocol: envelope, dedup, ordering, intent, dispatch."""
