"""Workdirs: their layout and files, the lock, full disks, the config history."""
