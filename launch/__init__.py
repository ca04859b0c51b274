"""Launch tools: `python -m launch.tpu` (Cloud TPU VMs); shell scripts here."""
