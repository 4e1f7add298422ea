"""Where and how code runs: devices, torch.distributed, model wrapping, precision (AMP and memory
format), seeding and RNG state, the CPU allocator setting, and the CUDA-stream prefetcher."""
