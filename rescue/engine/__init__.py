"""The algorithms and the jobs: rescue passes, imaging, conversion, restore. No UI imports."""
