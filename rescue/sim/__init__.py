"""Simulated disks: failure patterns for the demo, the tests and a user trying the tool safely."""
