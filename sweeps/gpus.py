"""What the study's executor may name as `gpu_type`: each GPU's dense peak and memory (the study file's
validation and the cost model both read these)."""

# Dense bf16 tensor-core peaks, TFLOP/s (vendor datasheets; V100 is fp16).
PEAK_TFLOPS = {"a100": 312.0, "h100": 989.0, "h200": 989.0, "b200": 2250.0, "l40s": 362.0, "v100": 125.0}
# Memory per GPU in GiB (2^30 bytes: an "80 GB" A100 holds 80 GiB); `cpu` has no bound.
GPU_MEMORY_GB = {"a100": 80.0, "h100": 80.0, "h200": 141.0, "b200": 180.0, "l40s": 48.0, "v100": 32.0}
