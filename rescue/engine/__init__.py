"""The algorithms: range map, rescue passes, jobs. No UI imports."""
