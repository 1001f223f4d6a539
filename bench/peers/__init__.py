"""Peer implementations of pssync's rules on other stream processors, used as benchmark
baselines."""
