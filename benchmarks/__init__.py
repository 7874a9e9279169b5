"""Speed and memory benchmarks of the trainer against its peers."""
