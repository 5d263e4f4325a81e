"""The local replica of the Explore API v2.1: server, ODSQL subset, fault injection, data generator."""
