"""HMM inference: posterior.py chooses the kernel for a device and size (the only place that
does); messages.py holds the named tuples and sequence layout; sequential.py the textbook
recursions every other kernel is tested against; chunked*.py the torch kernels that split a
long sequence into chunks; compiled*.py the numba kernels for the CPU; runtime.py thread
counts and memory."""
